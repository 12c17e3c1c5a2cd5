"""The chat REPL in a real pseudo-terminal (pexpect), on a tiny model that never ends
a reply by itself: prompt_toolkit input, streamed markdown output, slash commands,
Ctrl-C mid-reply, history across restarts, /save and /load."""

from __future__ import annotations

import json
import re
import shlex
import time

import pytest

from cli_support import CLI, converted, isolated_env

pexpect = pytest.importorskip("pexpect")

PROMPT = ">>>"  # prompt_toolkit draws the trailing space as a cursor move
STATS = re.compile(r"([\d,]+) tokens? at [\d.]+ tok/s · context [\d,]+ of [\d,]+")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return converted(tmp_path_factory.mktemp("repl"), rambling=True)


def spawn(model, tmp_path, *extra):
    env = isolated_env(tmp_path, PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm-256color")
    env.pop("COLUMNS", None)
    child = pexpect.spawn(CLI[0], CLI[1:] + ["chat", str(model), "--temp", "0", *extra],
                          env=env, encoding="utf-8", dimensions=(40, 120), timeout=120)
    child.expect("ready")
    child.expect_exact(PROMPT)
    return child


def ask(child, text):
    """Send a message; return how many tokens the reply had."""
    child.sendline(text)
    child.expect(STATS)
    tokens = int(child.match.group(1).replace(",", ""))
    child.expect_exact(PROMPT)
    return tokens


def test_chat_in_a_terminal(model, tmp_path):
    saved, again = tmp_path / "one.json", tmp_path / "two.json"
    child = spawn(model, tmp_path, "-m", "24")

    assert ask(child, "Hello there") == 24
    child.sendline("/undo")
    child.expect_exact("took back: 'Hello there'")
    child.expect_exact(PROMPT)

    ask(child, "Tell me about unified memory")
    first = json.loads(_save(child, saved).read_text())["messages"]
    child.sendline("/retry")
    child.expect(STATS)
    child.expect_exact(PROMPT)
    retried = json.loads(_save(child, again).read_text())["messages"]
    assert [m["role"] for m in first] == ["user", "assistant"]
    assert retried == first  # greedy: the retried reply is the same text

    # a long reply streams: text shows up while it runs, Ctrl-C stops it, the chat goes on
    child.sendline("/set max_tokens 100000")
    child.expect_exact("max_tokens = 100000")
    child.expect_exact(PROMPT)
    child.sendline("Now tell me a very long story")
    child.expect_exact("story")  # the echo of the input line
    streamed = _read_for(child, 3.0)
    assert len(streamed.strip()) > 20 and not STATS.search(streamed)
    child.sendcontrol("c")
    child.expect(STATS)
    child.expect_exact("stopped")
    child.expect_exact(PROMPT)
    child.sendline("/stats")
    child.expect(r"context [\d,]+ of")
    child.expect_exact(PROMPT)
    child.sendline("/set max_tokens 16")
    child.expect_exact(PROMPT)
    assert ask(child, "And a short one") == 16  # still usable after Ctrl-C

    # /load brings back the saved conversation; saving it again gives the same file
    child.sendline(f"/load {saved}")
    child.expect_exact("loaded 2 messages")
    child.expect_exact(PROMPT)
    round_trip = _save(child, tmp_path / "three.json")
    assert json.loads(round_trip.read_text())["messages"] == first

    child.sendcontrol("c")  # at the prompt: nothing to stop, the chat stays
    child.expect_exact("Ctrl-D or /exit")
    child.expect_exact(PROMPT)  # send ^D only once prompt_toolkit reads again
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    history = (tmp_path / "home" / "chat_history").read_text()
    assert "Hello there" in history and "/undo" in history


def test_history_survives_restarts(model, tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "chat_history").write_text("\n# 2024-01-01\n+/stats\n")
    child = spawn(model, tmp_path, "-m", "4")
    child.send("\x1b[A")  # up arrow: the previous session's line comes back
    child.expect_exact("/stats")
    child.send("\r")
    child.expect(r"context [\d,]+ of")
    child.expect_exact(PROMPT)
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def _save(child, path):
    child.sendline(f"/save {path}")
    child.expect_exact("saved")
    child.expect_exact(PROMPT)
    return path


def _read_for(child, seconds: float) -> str:
    end, got = time.time() + seconds, ""
    while time.time() < end:
        try:
            got += child.read_nonblocking(4096, timeout=0.2)
        except pexpect.TIMEOUT:
            pass
    return got


def test_demo_then_chat_in_a_terminal(tmp_path):
    """The README's first steps as written: `qwen3next demo`, then `qwen3next models` and
    `qwen3next chat <the demo's model>` right after."""
    env = isolated_env(tmp_path, PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm-256color")
    env.pop("COLUMNS", None)
    demo = pexpect.spawn(CLI[0], CLI[1:] + ["demo", "-m", "4"], env=env, encoding="utf-8",
                         dimensions=(40, 200), timeout=180)
    demo.expect("demo done")
    demo.expect(r"qwen3next chat (\S+)")
    name = demo.match.group(1).rstrip("`.")
    demo.expect(pexpect.EOF)
    demo.close()
    assert demo.exitstatus == 0
    listing = pexpect.run(" ".join(CLI + ["models"]), env=env, encoding="utf-8", timeout=60)
    assert name in listing
    child = pexpect.spawn(CLI[0], CLI[1:] + ["chat", name, "-m", "5", "--temp", "0"], env=env,
                          encoding="utf-8", dimensions=(40, 120), timeout=120)
    child.expect("ready")
    child.expect_exact(PROMPT)
    assert ask(child, "Hello") <= 5
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def test_keys_typed_while_a_reply_streams_are_not_echoed_into_it(model, tmp_path):
    child = spawn(model, tmp_path, "-m", "300")
    child.sendline("Tell me a long story")
    time.sleep(2)  # the reply is streaming now (300 tokens take far longer)
    child.send("qqqq")
    child.expect(STATS)
    assert "qqqq" not in child.before
    child.expect_exact(PROMPT)
    child.expect_exact("qqqq")  # kept for the next prompt, as typed
    child.sendcontrol("u")
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def test_control_characters_are_escaped_on_a_terminal_not_in_json(model, tmp_path):
    env = isolated_env(tmp_path)

    def stdout_on_a_terminal(args) -> str:  # stderr (the loading spinner) left out
        command = "bash -c " + shlex.quote(shlex.join(args) + " 2>/dev/null")
        return pexpect.run(command, env=env, encoding="utf-8", timeout=120)

    for prompt in ("Hi there", "Hello", "Tell me a story", "What is this?"):
        args = CLI + ["generate", str(model), "-m", "60", "--temp", "0", "-p", prompt]
        record = json.loads(stdout_on_a_terminal(args + ["--json"]))
        controls = [c for c in record["text"] if ord(c) < 32 and c not in "\n\t"]
        if controls:  # the random model's reply to this prompt has some: the case that matters
            break
    assert controls, "no reply of the random model had a control character"
    shown = stdout_on_a_terminal(args)
    assert not [c for c in shown if ord(c) < 32 and c not in "\r\n\t"]
    assert f"\\x{ord(controls[0]):02x}" in shown


def test_save_cache_then_load_cache_in_a_new_chat(model, tmp_path):
    file = tmp_path / "talk.safetensors"
    child = spawn(model, tmp_path, "-m", "6")
    ask(child, "Remember the word teapot")
    child.sendline(f"/save-cache {file}")
    child.expect_exact("saved the conversation's cache")
    child.expect_exact(PROMPT)
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    again = spawn(model, tmp_path, "-m", "6")
    again.sendline(f"/load-cache {file}")
    again.expect(r"resumed 2 messages from .* tokens, no prefill")
    again.expect_exact(PROMPT)
    assert ask(again, "What was the word?") == 6
    again.sendline("/exit")
    again.expect(pexpect.EOF)
