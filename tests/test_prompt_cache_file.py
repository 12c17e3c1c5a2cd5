"""Prompt caches on disk: `cache-prompt` then `generate --prompt-cache` in new processes
give what a cold run gives; mlx-lm reads the files and continues alike; another model,
other kv_bits or a damaged file is one clear line; writes are atomic."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

import mlx_qwen3next  # noqa: F401
import mlx.core as mx
from cli_support import CLI, converted, isolated_env
from mlx_qwen3next import load, stream_generate
from mlx_qwen3next.generation import prefill
from mlx_qwen3next.generation.cache_file import load_prompt_cache, save_prompt_cache

DOCUMENT = "Unified memory lets the GPU read the weights in place. " * 30


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return converted(tmp_path_factory.mktemp("pcache"))


def cli(env, *args):
    r = subprocess.run(CLI + [str(a) for a in args], env=env, capture_output=True, text=True,
                       timeout=300)
    return r


@pytest.mark.parametrize("raw", [False, True])
def test_cache_prompt_then_generate_equals_a_cold_run(model_dir, tmp_path, raw):
    env = isolated_env(tmp_path)
    file = tmp_path / "doc.safetensors"
    flag = ["--raw"] if raw else []
    made = cli(env, "cache-prompt", model_dir, "-p", DOCUMENT, "-o", file, *flag)
    assert made.returncode == 0, made.stderr
    assert "cached" in made.stderr and file.is_file()
    common = ["-m", "12", "--temp", "0", "--json", *flag]
    question = " And what does it mean?" if raw else "What does it mean?"
    warm = cli(env, "generate", model_dir, "--prompt-cache", file, "-p", question, *common)
    assert warm.returncode == 0, warm.stderr
    cold_prompt = DOCUMENT + question if raw else None
    if raw:
        cold = cli(env, "generate", model_dir, "-p", cold_prompt, *common)
    else:  # the same chat: the document as the first user message, then the question
        model, tok = load(model_dir)
        messages = [{"role": "user", "content": DOCUMENT}, {"role": "user", "content": question}]
        cold_text = "".join(r.text for r in stream_generate(model, tok, messages, max_tokens=12,
                                                            temperature=0.0))
    record = json.loads(warm.stdout)
    assert record["cached_tokens"] > 300
    if raw:
        assert record["text"] == json.loads(cold.stdout)["text"]
    else:
        assert record["text"] == cold_text


def test_mlx_lm_reads_our_file_and_continues_alike(model_dir, tmp_path):
    from mlx_lm.generate import generate_step
    from mlx_lm.models.cache import load_prompt_cache as lm_load
    from mlx_lm.utils import load_model as lm_load_model

    model, tok = load(model_dir)
    model.set_dtype(mx.float32)  # both sides in float32: no bf16 near-ties in the argmax
    ids = tok.encode(DOCUMENT, add_special_tokens=False)
    cache = model.make_cache()
    prefill(model, cache, ids)
    file = save_prompt_cache(tmp_path / "c.safetensors", cache, ids, model)
    more = tok.encode(" So", add_special_tokens=False)
    ours = [r.token for r in stream_generate(model, tok, more, cache=load_prompt_cache(
        file, model)[0], max_tokens=6, temperature=0.0, mtp=False)]
    theirs_model, _ = lm_load_model(model_dir)
    theirs_model.set_dtype(mx.float32)
    theirs_cache = lm_load(str(file))
    steps = generate_step(mx.array(more), theirs_model, prompt_cache=theirs_cache,
                          max_tokens=6)
    assert ours == [int(token) for token, _ in steps]


def test_refused_files(model_dir, tmp_path, make_checkpoint):
    model, tok = load(model_dir)
    ids = tok.encode("Hello there", add_special_tokens=False)
    cache = model.make_cache()
    prefill(model, cache, ids)
    file = save_prompt_cache(tmp_path / "c.safetensors", cache, ids, model)
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary left
    other, _ = load(make_checkpoint("other", hidden_size=32))
    with pytest.raises(ValueError, match="c.safetensors: made for another model"):
        load_prompt_cache(file, other)
    with pytest.raises(ValueError, match="saved with kv_bits None, asked for 8"):
        load_prompt_cache(file, model, kv_bits=8)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(ValueError, match="damaged.safetensors: not a readable prompt cache"):
        load_prompt_cache(damaged, model)
    env = isolated_env(tmp_path)
    r = cli(env, "generate", model_dir, "--prompt-cache", damaged, "-p", "hi")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "damaged.safetensors" in r.stderr
    r = cli(env, "generate", model_dir, "--prompt-cache", file, "-p", "hi")  # raw file, chat
    assert r.returncode == 1 and "add --raw" in r.stderr
