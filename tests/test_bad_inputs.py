"""Hostile input, by class, at the API and the CLI: tokenizer and settings files, the
models folder, flags and arguments. Each is one line naming the file or value, a
non-zero exit at the CLI, and the model or folder stays usable."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from cli_support import converted, one_line_error
from mlx_qwen3next import LoadError, load, stream_generate
from mlx_qwen3next.checkpoints import hub
from mlx_qwen3next.cli.app import app


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return converted(tmp_path_factory.mktemp("bad-inputs"))


@pytest.fixture(scope="module")
def tiny(model_dir):
    return load(model_dir)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setenv("QWEN3NEXT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)


def run(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def copy(model_dir, tmp_path, name="m"):
    return shutil.copytree(model_dir, tmp_path / name)


# -- tokenizer and settings files -----------------------------------------------------

def test_missing_tokenizer_json(model_dir, tmp_path):
    m = copy(model_dir, tmp_path)
    (m / "tokenizer.json").unlink()
    with pytest.raises(LoadError, match="tokenizer.json: missing"):
        load(m)
    assert "tokenizer.json: missing" in one_line_error(run("generate", m, "-p", "hi"))


@pytest.mark.parametrize("name", ["tokenizer_config.json", "generation_config.json"])
def test_unreadable_settings_file_is_named(model_dir, tmp_path, name):
    m = copy(model_dir, tmp_path)
    (m / name).write_text("{oops")
    with pytest.raises(LoadError, match=f"{name}: not valid JSON"):
        load(m)
    assert f"{name}: not valid JSON" in one_line_error(run("generate", m, "-p", "hi"))


def test_bad_sampling_default_in_generation_config(model_dir, tmp_path):
    m = copy(model_dir, tmp_path)
    gen = json.loads((m / "generation_config.json").read_text())
    (m / "generation_config.json").write_text(json.dumps({**gen, "temperature": "hot"}))
    model, tok = load(m)
    with pytest.raises(ValueError, match="generation_config.json: temperature must be a number"):
        stream_generate(model, tok, "hi")


def test_broken_chat_template_is_named(model_dir, tmp_path):
    m = copy(model_dir, tmp_path)
    cfg = json.loads((m / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{% for m in messages %}{{ m.content }"
    (m / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(LoadError, match="the chat template does not render"):
        load(m)


# -- the models folder ------------------------------------------------------------------

def test_broken_entries_are_listed_not_picked(model_dir):
    folder = hub.models_dir()
    good = shutil.copytree(model_dir, folder / "good")
    only_config = folder / "only-config"
    only_config.mkdir(parents=True)
    shutil.copy(model_dir / "config.json", only_config / "config.json")
    bad_config = shutil.copytree(model_dir, folder / "bad-config")
    cfg = json.loads((bad_config / "config.json").read_text())
    (bad_config / "config.json").write_text(json.dumps({**cfg, "quantization": "lots",
                                                        "head_dim": "x"}))
    (bad_config / "config.json").touch()  # the newest: picked first if it were a model
    listing = run("models")
    assert listing.exit_code == 0, listing.output
    for name in ("good", "only-config", "bad-config"):
        assert name in listing.stdout
    assert "only-config cannot be loaded: no .safetensors weight files" in listing.stderr
    assert "bad-config cannot be loaded: config.json: head_dim must be" in listing.stderr
    assert hub.default_model().path == good
    result = run("generate", "-p", "Hello", "-m", "3", "--temp", "0")
    assert result.exit_code == 0, result.output


# -- flags and API arguments -------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (("--temp", "-1"), "temperature must be >= 0"),
    (("--top-p", "0"), "top_p must be in (0, 1]"),
    (("--top-k", "-3"), "top_k must be >= 0"),
    (("--seed", str(2**64)), "seed must be an integer from 0 to 2**64 - 1"),
    (("--seed", "-1"), "seed must be an integer from 0"),
    (("--dtype", "int8"), "dtype must be one of bfloat16, float16, float32, not 'int8'"),
])
def test_bad_flags_fail_before_the_model_loads(tmp_path, args, words):
    missing = tmp_path / "no-such-model"  # loading it would fail differently
    for command in (("generate", missing, "-p", "hi"), ("chat", missing)):
        assert words in one_line_error(run(*command, *args))


@pytest.mark.parametrize("content, words", [
    (None, "cannot read the tools file"),
    ("[{", "not JSON"),
    ("[]", "expected a non-empty list of tool definitions"),
    ('[{"type": "function", "function": {"description": "x"}}]', "tool 0 has no function name"),
])
def test_bad_tools_file_is_named(tmp_path, content, words):
    tools = tmp_path / "tools.json"
    if content is not None:
        tools.write_text(content)
    for command in (("generate", tmp_path / "no-model", "-p", "hi"), ("chat", tmp_path / "x")):
        line = one_line_error(run(*command, "--tools", tools))
        assert words in line and "tools.json" in line


def test_tools_need_the_chat_template(model_dir, tmp_path):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"type": "function", "function": {"name": "f"}}]))
    assert "drop --raw" in one_line_error(run("generate", model_dir, "--raw", "-p", "x",
                                              "--tools", tools))
    plain = json.loads(run("generate", model_dir, "-p", "hi", "-m", "1", "--json").stdout)
    told = json.loads(run("generate", model_dir, "-p", "hi", "-m", "1", "--json",
                          "--tools", tools).stdout)
    assert told["prompt_tokens"] > plain["prompt_tokens"] + 20  # the tools system turn


def test_empty_prompt_flag_is_refused_like_empty_stdin(model_dir):
    assert "the prompt given with -p is empty" in one_line_error(run("generate", model_dir,
                                                                     "-p", ""))
    assert "empty" in one_line_error(run("generate", model_dir, input="\n"))


def test_mtp_flag_without_a_head(tmp_path):
    m = converted(tmp_path, "no-head")
    for shard in m.glob("mtp-*.safetensors"):
        shard.unlink()
    index = json.loads((m / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items()
                           if not k.startswith("mtp.")}
    (m / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "no MTP head" in one_line_error(run("generate", m, "-p", "hi", "--mtp"))


@pytest.mark.parametrize("kwargs, words", [
    (dict(stop=5), "stop must be text or a list of texts, got 5"),
    (dict(stop=[""]), "stop strings must be non-empty text"),
])
def test_bad_api_arguments(tiny, kwargs, words):
    model, tok = tiny
    with pytest.raises(ValueError, match=words):
        stream_generate(model, tok, "hi", **kwargs)


@pytest.mark.parametrize("messages, words", [
    ([{"role": "wizard", "content": "hi"}], "message 0 has role 'wizard'"),
    ([{"role": "user", "content": 5}], "message 0: content must be text, got int"),
    ([{"role": "user"}], "message 0 has no content"),
])
def test_bad_messages(tiny, messages, words):
    model, tok = tiny
    with pytest.raises(ValueError, match=words):
        stream_generate(model, tok, messages)


def test_load_takes_what_the_cli_takes(model_dir):
    shutil.copytree(model_dir, hub.models_dir() / "by-name")
    model, tok = load("by-name")
    assert list(stream_generate(model, tok, "hi", max_tokens=2, temperature=0.0))
    with pytest.raises(ValueError, match="unknown model 'no-such'"):
        load("no-such")
    with pytest.raises(ValueError, match="dtype must be one of"):
        load(model_dir, dtype="int8")


# -- raw completion keeps the exact text --------------------------------------------------

def test_raw_completion_keeps_the_first_tokens_leading_space(tiny):
    model, tok = tiny
    leading = 0
    for i in range(40):
        out = list(stream_generate(model, tok, f"The capital of France is {i}", max_tokens=4,
                                   temperature=0.0, mtp=False))
        tokens = [r.token for r in out if r.token not in tok.eos_token_ids]
        if max(tokens, default=0) >= len(tok._tokenizer):
            continue  # the random model's vocabulary is larger than the tokenizer's
        text = "".join(r.text for r in out)
        assert text == tok.decode(tokens), (text, tok.decode(tokens))
        leading += text.startswith(" ")
    assert leading > 0  # the case that mattered came up
