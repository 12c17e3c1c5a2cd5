"""The model split across two ranks on this machine: `mlx.launch --backend ring -n 2
--hosts 127.0.0.1` over loopback, as CI can run it. Real processes, real messages."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time

import pytest
from mlx.utils import tree_flatten

from cli_support import CLI, converted, isolated_env, run_cli
from mlx_qwen3next import load_model
from mlx_qwen3next.testing.drafting import drafting_weights
from mlx_qwen3next.testing.tiny import write_checkpoint

pytestmark = pytest.mark.skipif(shutil.which("mlx.launch") is None, reason="needs mlx.launch")

PROMPT = "Tell me about unified memory"
RANKS = re.compile(r"pipeline over 2 ranks: rank 0 layers (\d+)-(\d+) \(pid (\d+).*"
                   r"rank 1 layers (\d+)-(\d+) \(pid (\d+)")
STATS = re.compile(r"([\d,]+) tokens? at [\d.]+ tok/s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_args(args, ranks: int = 2) -> list[str]:
    return ["mlx.launch", "--backend", "ring", "-n", str(ranks), "--hosts", "127.0.0.1",
            "--starting-port", str(free_port()), "--", *CLI, *map(str, args)]


def launch(args, env, timeout=180, input=None, ranks: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(launch_args(args, ranks), env=env, input=input, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    drafting = write_checkpoint(tmp / "drafting", weights=drafting_weights(0.3), dtype="float32")
    return {"drafting": drafting, "4bit": converted(tmp), "rambling": converted(
        tmp, "rambling-4bit", rambling=True)}


def our_lines(stderr: str) -> list[str]:
    """Our one-line errors. mlx.launch's own "[WARN] Node ... exited" notice is not written
    in one piece and can begin on the line ours is printed on, so ours are found within
    lines, not only at their start."""
    return re.findall(r"qwen3next: [^\n]*", stderr)


def json_line(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, stdout  # rank 0 alone writes output
    return json.loads(lines[0])


@pytest.mark.parametrize("mtp", [[], ["--no-mtp"]], ids=["mtp", "no-mtp"])
def test_greedy_json_matches_one_process(models, tmp_path, mtp):
    env = isolated_env(tmp_path)
    args = ["generate", models["drafting"], "-p", PROMPT, "--temp", "0", "-m", "40",
            "--draft-tokens", "2", "--json", *mtp]
    alone = run_cli(args, env)
    assert alone.returncode == 0, alone.stderr
    split = launch(args, env)
    assert split.returncode == 0 and "Traceback" not in split.stderr, split.stderr
    one, two = json.loads(alone.stdout), json_line(split.stdout)
    assert two["text"] == one["text"] and two["generation_tokens"] == one["generation_tokens"] == 40
    assert two["from_mtp_drafts"] == one["from_mtp_drafts"]
    if mtp == []:  # drafts were accepted and rejected: rewinds ran on both ranks
        assert 0 < one["from_mtp_drafts"] < 40
    assert [r["layers"] for r in two["ranks"]] in ([[0, 2], [2, 4]], [[0, 1], [1, 4]],
                                                   [[0, 3], [3, 4]])


def test_three_ranks_match_one_process(models, tmp_path):
    """A middle rank receives and sends."""
    env = isolated_env(tmp_path)
    args = ["generate", models["drafting"], "-p", PROMPT, "--temp", "0", "-m", "24",
            "--draft-tokens", "2", "--json"]
    alone = run_cli(args, env)
    split = launch(args, env, ranks=3)
    assert split.returncode == 0 and "Traceback" not in split.stderr, split.stderr
    one, three = json.loads(alone.stdout), json_line(split.stdout)
    assert three["text"] == one["text"] and three["from_mtp_drafts"] == one["from_mtp_drafts"]
    assert [r["layers"][0] for r in three["ranks"]] == [0, three["ranks"][0]["layers"][1],
                                                       three["ranks"][1]["layers"][1]]


def test_each_rank_holds_about_half_the_weights(models, tmp_path):
    path = models["4bit"]
    whole = sum(v.nbytes for _, v in tree_flatten(load_model(path).parameters()))
    got = launch(["generate", path, "-p", PROMPT, "--temp", "0", "-m", "4", "--json",
                  "--split", "even"], isolated_env(tmp_path))
    assert got.returncode == 0, got.stderr
    ranks = json_line(got.stdout)["ranks"]
    assert [r["layers"] for r in ranks] == [[0, 2], [2, 4]]
    held = [r["weight_bytes"] for r in ranks]
    assert abs(sum(held) - whole) <= 2 * 1024  # nothing twice (reports round to KiB)
    for r in ranks:
        assert 0.3 * whole < r["weight_bytes"] < 0.7 * whole, (r, whole)
        assert r["active_memory"] < 0.75 * whole, (r, whole)  # read only its own tensors
    m = RANKS.search(got.stderr)
    assert m and m.group(3) != m.group(6), got.stderr


def test_bad_split_is_one_line(models, tmp_path):
    got = launch(["generate", models["4bit"], "-p", "hi", "--split", "3,9"],
                 isolated_env(tmp_path), timeout=120)
    errors = our_lines(got.stderr)
    assert errors == ["qwen3next: error: --split 3,9: the counts add up to 12, the model has "
                      "4 layers"], got.stderr
    assert "Traceback" not in got.stderr and not got.stdout.strip()


def test_chat_through_rank0(models, tmp_path):
    """Lines typed at mlx.launch's terminal reach rank 0, which passes them on: slash
    commands apply on every rank (a rank that missed one would fall out of step)."""
    pexpect = pytest.importorskip("pexpect")
    env = isolated_env(tmp_path)
    args = launch_args(["chat", models["4bit"], "--temp", "0", "-m", "12"])
    child = pexpect.spawn(args[0], args[1:], env=env, encoding="utf-8", timeout=120)
    child.expect("ready")
    child.sendline("Hello there")
    child.expect(STATS)
    assert child.match.group(1) == "12"
    child.sendline("/set max_tokens 5")
    child.expect_exact("max_tokens = 5")
    child.sendline("And again")
    child.expect(STATS)
    assert child.match.group(1) == "5"
    child.sendline("/undo")
    child.expect_exact("took back: 'And again'")
    child.sendline("/retry")
    child.expect(STATS)
    assert child.match.group(1) == "5"
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert "error" not in child.before.lower(), child.before


def first_output(proc: subprocess.Popen, timeout: float) -> str:
    """Waits for the first bytes on the process's stdout (a reply has started streaming)."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output"
    return os.read(proc.stdout.fileno(), 4096).decode(errors="replace")


def test_killed_rank_ends_the_run_with_one_line(models, tmp_path):
    args = launch_args(["generate", models["rambling"], "-p", PROMPT, "-m", "100000",
                        "--temp", "0"])
    proc = subprocess.Popen(args, env=isolated_env(tmp_path), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = ""
        while not RANKS.search(seen):
            line = proc.stderr.readline()
            assert line, seen
            seen += line
        first = first_output(proc, timeout=120)  # the reply is streaming
        pid = int(RANKS.search(seen).group(6))
        subprocess.run(["kill", "-9", str(pid)], check=True)
        out, err = proc.communicate(timeout=60)  # no hang
        out = first + out
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    ours = our_lines(seen + err)
    assert len(ours) == 1, seen + err
    assert re.fullmatch(r"qwen3next: error: rank 0: another rank stopped \(.+\); ending",
                        ours[0]), ours
    assert "Traceback" not in err
    assert re.search(r"rank 0 exited with code (1|-15)", err), err  # not 0: it failed
    assert out.strip()  # it had been streaming


def test_serve_on_rank0(models, tmp_path):
    """The HTTP server runs on rank 0; both ranks run each request; SIGINT to rank 0
    stops the server and, through it, the other rank."""
    import urllib.request

    env = isolated_env(tmp_path)
    path = models["4bit"]
    alone = run_cli(["generate", path, "-p", PROMPT, "--temp", "0", "-m", "16", "--json"], env)
    assert alone.returncode == 0, alone.stderr
    port = free_port()
    proc = subprocess.Popen(launch_args(["serve", path, "--port", port]), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = ""
        while "serving" not in seen:
            line = proc.stderr.readline()
            assert line, seen
            seen += line
        body = json.dumps({"messages": [{"role": "user", "content": PROMPT}],
                           "max_tokens": 16, "temperature": 0}).encode()
        for _ in range(2):  # the ranks are still in step after a request
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions",
                                         body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                reply = json.loads(r.read())
            assert reply["choices"][0]["message"]["content"] == json.loads(alone.stdout)["text"]
        subprocess.run(["kill", "-INT", RANKS.search(seen).group(3)], check=True)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    assert "server stopped" in err and "error" not in err.lower(), err


def test_sigint_to_rank0_stops_the_reply_on_every_rank(models, tmp_path):
    """Ctrl-C reaches rank 0 (here as SIGINT to its pid: mlx.launch ends on a Ctrl-C typed
    at its own terminal); every rank stops at the same token, and the chat goes on."""
    pexpect = pytest.importorskip("pexpect")
    args = launch_args(["chat", models["rambling"], "--temp", "0", "-m", "100000"])
    child = pexpect.spawn(args[0], args[1:], env=isolated_env(tmp_path), encoding="utf-8",
                          timeout=120)
    child.expect(RANKS)
    rank0 = child.match.group(3)
    child.expect("ready")
    child.sendline("Tell me a very long story")
    time.sleep(3.0)  # streaming
    subprocess.run(["kill", "-INT", rank0], check=True)
    child.expect(STATS)
    child.expect_exact("stopped")
    child.sendline("/set max_tokens 5")
    child.expect_exact("max_tokens = 5")
    child.sendline("And now?")  # a rank that stopped elsewhere would be out of step here
    child.expect(STATS)
    assert child.match.group(1) == "5"
    child.sendline("/exit")
    child.expect(pexpect.EOF)
