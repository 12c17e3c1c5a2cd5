"""Every command through typer's CliRunner (in-process, stdin not a TTY), errors included:
each failure is one line on stderr, a non-zero exit and no traceback."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from cli_support import converted, one_line_error, tiny_source
from mlx_qwen3next.checkpoints import hub
from mlx_qwen3next.cli.app import app

COMMANDS = ("download", "convert", "chat", "generate", "serve", "cache-prompt", "info", "models", "demo")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A converted tiny model that never ends a reply by itself."""
    return converted(tmp_path_factory.mktemp("cli"), rambling=True)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setenv("QWEN3NEXT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)  # nothing here may reach a network
    return tmp_path


def run(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def test_help_names_every_command():
    result = run("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output
    for name in COMMANDS:
        assert run(name, "--help").exit_code == 0


@pytest.mark.parametrize("args, code", [
    (("info", "--bogus"), 2),
    (("frobnicate",), 2),
    (("generate", "m", "--max-tokens", "0"), 2),
    (("info", "m", "--context", "many"), 2),
    (("info",), 2),
    (("chat", "m", "--draft-tokens", "9"), 2),
])
def test_bad_flags(args, code):
    result = run(*args)
    assert result.exit_code == code
    assert "--help" in one_line_error(result)


@pytest.mark.parametrize("name, words", [
    ("no-such-model", "unknown model"),
    ("./missing/dir", "unknown model"),
    ("Qwen/Not-Downloaded", "not downloaded yet"),
])
def test_unknown_model(name, words):
    for command in ("info", "chat", "generate"):
        result = run(command, name, "-p", "hi") if command == "generate" else run(command, name)
        assert result.exit_code == 1
        assert words in one_line_error(result)


def test_unreadable_model_dirs(tmp_path, model):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    assert "config" in one_line_error(run("info", garbage))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "config.json" in one_line_error(run("generate", empty, "-p", "hi"))
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    for shard in broken.glob("model*.safetensors"):
        shard.write_bytes(b"\0" * 16)
    assert one_line_error(run("generate", broken, "-p", "hi"))
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert "not a directory" in one_line_error(run("info", a_file))


def test_no_model_yet_says_how_to_get_one():
    for args in (("chat",), ("generate", "-p", "hi")):
        message = one_line_error(run(*args))
        assert "qwen3next demo" in message and "qwen3next convert" in message


def test_download_offline_with_empty_cache():
    message = one_line_error(run("download", "Qwen/Some-Model", "-q"))
    assert "HF_HUB_OFFLINE" in message
    assert "not a Hub repo id" in one_line_error(run("download", "not a repo"))


def test_convert_into_models_folder_then_models_and_info(tmp_path):
    src = tiny_source(tmp_path / "Tiny-Next")
    result = run("convert", src, "-q")
    assert result.exit_code == 0, result.output
    target = hub.models_dir() / "Tiny-Next-4bit"
    assert result.stdout.strip() == str(target.resolve())
    assert "bits per weight" in result.stderr and "qwen3next chat Tiny-Next-4bit" in result.stderr
    listing = run("models")
    assert listing.exit_code == 0
    assert "Tiny-Next-4bit" in listing.stdout and "4/8-bit g64" in listing.stdout
    info = run("info", "Tiny-Next-4bit")
    assert info.exit_code == 0
    for words in ("parameters", "active per token", "4/8-bit g64", "on disk", "fits"):
        assert words in info.stdout
    # converting again refuses to overwrite; bad recipe options are one line
    assert "--force" in one_line_error(run("convert", src, "-q"))
    assert "recipe" in one_line_error(run("convert", src, "-q", "--recipe", "5bit", "--force"))
    assert "bits" in one_line_error(run("convert", src, "-q", "--bits", "7", "-o", tmp_path / "o"))


def test_models_when_empty():
    result = run("models")
    assert result.exit_code == 0
    assert "qwen3next demo" in result.stderr


def test_generate_plain_and_json(model):
    plain = run("generate", model, "-p", "Hello", "-m", "12", "--temp", "0")
    assert plain.exit_code == 0, plain.output
    as_json = run("generate", model, "-m", "12", "--temp", "0", "--json", input="Hello\n")
    assert as_json.exit_code == 0, as_json.output
    record = json.loads(as_json.stdout)
    assert record["text"] == plain.stdout.rstrip("\n")  # stdin and -p: same prompt, greedy
    assert record["generation_tokens"] == 12 and record["finish_reason"] == "length"
    assert record["prompt_tokens"] > 0 and record["generation_tps"] > 0
    assert "Traceback" not in as_json.stderr


def test_generate_errors(model):
    assert "empty" in one_line_error(run("generate", model, input=""))
    assert "top_p" in one_line_error(run("generate", model, "-p", "hi", "--top-p", "3"))


def test_chat_from_plain_stdin(model, tmp_path):
    saved = tmp_path / "chat.json"
    script = "\n".join([
        "Hello there", "/retry", "/set temperature 0", '"""', "two", "lines", '"""',
        "/undo", f"/save {saved}", "/stats", "/set top_p 7", "/bogus", "/load /nonexistent",
        "/help", "/exit"]) + "\n"
    result = run("chat", model, "-m", "8", input=script)
    assert result.exit_code == 0, result.output
    assert result.output.count("tok/s · context") == 3  # two sends and one retry
    assert "took back: 'two\\nlines'" in result.output
    assert "error: top_p must be in (0, 1]" in result.output
    assert "unknown command /bogus" in result.output
    assert "/nonexistent" in result.output
    messages = json.loads(saved.read_text())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == "Hello there"


def test_demo_chats_with_the_trained_model_and_leaves_it():
    result = run("demo")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "A TINY TRAINED MODEL" in out and "converted it with the real converter" in out
    assert "tiny Qwen3-Next demo model" in out
    assert "56 + 65 = 121." in out and "12 - 58 = -46." in out  # held-out sums
    # the tool call with the asked city, and an answer from its result
    assert '{"name": "get_weather", "arguments": {"city": "Lyon"}}' in out
    assert "the model called get_weather" in out and "It is 18 degrees and sunny in Lyon" in out
    assert "MTP acceptance" in out and "demo done" in out
    assert "qwen3next chat qwen3next-tiny-4bit" in out
    listing = run("models")
    assert "qwen3next-tiny-4bit" in listing.stdout and "broken" not in listing.stdout
    chat = run("generate", "qwen3next-tiny-4bit", "-p", "What is 30 + 24?", "--temp", "0")
    assert chat.exit_code == 0 and chat.stdout.strip().endswith("= 54."), chat.output
    assert run("demo", "-m", "2").exit_code == 0  # a second demo replaces its model