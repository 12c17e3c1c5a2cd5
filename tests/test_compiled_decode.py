"""Compiled decode steps (model/compiled.py) against the eager modules they compile."""

from __future__ import annotations

import re

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_qwen3next import load_model
from mlx_qwen3next.cache import KVCache
from mlx_qwen3next.generation import token_stream
from mlx_qwen3next.generation.kv_quant import quantize_kv
from mlx_qwen3next.generation.context import set_rope_scaling
from mlx_qwen3next.model import compiled
from mlx_qwen3next.model.switch import SwitchGLU

TOL = 1e-5  # float32; compilation fuses and reorders a few sums and products


def rel_err(a, b) -> float:
    a, b = (np.asarray(x.astype(mx.float32), np.float64) for x in (a, b))
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def ids(n, seed=0, rows=1):
    return np.random.default_rng(seed).integers(0, 500, (rows, n)).tolist()


def run(model, fast: bool, prompt, tokens, cache=None):
    """Prefill `prompt` (rows of ids; may be empty), then one step per column of `tokens`;
    the logits of every step."""
    model.compile_steps = fast
    cache = model.make_cache() if cache is None else cache
    if prompt and prompt[0]:
        model(mx.array(prompt), cache)
    out = []
    for t in np.array(tokens).T:
        out.append(model(mx.array(t[:, None]), cache))
        mx.eval(out[-1], cache_arrays(cache))
    return out, cache


def cache_arrays(cache):
    out = []
    for c in cache:
        out += [c.keys, c.values] if isinstance(c, KVCache) else [c.conv_state, c.recurrent_state]
    return [a for a in out if a is not None]


def assert_same(plain, fast, tol=TOL):
    assert len(plain) == len(fast)
    for step, (a, b) in enumerate(zip(plain, fast)):
        assert rel_err(b, a) <= tol, f"step {step}: {rel_err(b, a)}"


@pytest.fixture
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint)


@pytest.mark.parametrize("prompt_len", [0, 1, 7, 250])
def test_same_logits_across_kv_growth(model, prompt_len):
    """Steps after prefills of several lengths; 250 + 12 crosses the 256-position buffer."""
    tokens = ids(12 if prompt_len == 250 else 40, seed=prompt_len + 1)
    prompt = ids(prompt_len, seed=prompt_len)
    plain, _ = run(model, False, prompt, tokens)
    fast, cache = run(model, True, prompt, tokens)
    assert_same(plain, fast)
    assert cache.offset == prompt_len + len(tokens[0])
    assert cache[3].keys.shape[2] % KVCache.step == 0


def test_batch_rows_without_padding(model):
    prompt, tokens = ids(9, seed=2, rows=2), ids(6, seed=3, rows=2)
    assert_same(run(model, False, prompt, tokens)[0], run(model, True, prompt, tokens)[0])


def test_left_padded_batch(model, monkeypatch):
    """Rows of different lengths, left-padded, decoded through the compiled steps across
    the KV buffer's growth: the eager forward's logits, and each row's logits alone."""
    a, b = ids(250, seed=4)[0], ids(243, seed=5)[0]
    tokens = ids(12, seed=6, rows=2)

    def padded(fast):
        model.compile_steps = False  # the prefill: eager either way
        cache = model.make_cache(left_pad=[0, 7])
        model(mx.array([a, [0] * 7 + b]), cache)
        return run(model, fast, [], tokens, cache)[0]

    calls = []
    layer = compiled.CompiledSteps.layer
    monkeypatch.setattr(compiled.CompiledSteps, "layer",
                        lambda self, *args, **kw: calls.append(1) or layer(self, *args, **kw))
    fast = padded(True)
    assert len(calls) == 12 * len(model.layers)
    assert_same(padded(False), fast)
    for row, prompt in enumerate((a, b)):
        alone = run(model, True, [prompt], [tokens[row]])[0]
        assert_same(alone, [step[row:row + 1] for step in fast], tol=1e-4)


@pytest.mark.parametrize("padded", [False, True])
def test_a_batch_large_enough_to_sort_its_experts(model, padded):
    """32 rows x 2 experts reach SwitchGLU.SORT_FROM pairs inside the compiled step (on the
    CPU: the grouped experts, which need a host sync, take the gathers there)."""
    rows = 32
    assert rows * model.config.num_experts_per_tok >= SwitchGLU.SORT_FROM
    pads = [i % 3 for i in range(rows)] if padded else None
    prompt, tokens = ids(6, seed=8, rows=rows), ids(3, seed=9, rows=rows)

    def steps(fast):
        model.compile_steps = False
        cache = model.make_cache(pads)
        model(mx.array(prompt), cache)
        return run(model, fast, [], tokens, cache)[0]

    assert_same(steps(False), steps(True))


def test_greedy_generation_identical(model):
    greedy = lambda logprobs: mx.argmax(logprobs, axis=-1)
    out = {}
    for fast in (False, True):
        model.compile_steps = fast
        stream = token_stream(model, ids(11, seed=4)[0], model.make_cache(), greedy,
                              max_tokens=300)
        out[fast] = [tok for tok, _ in stream]
    assert out[True] == out[False]
    assert len(set(out[True])) > 5  # a real sequence, not one token repeated


def test_after_restoring_a_mark(model):
    """The KV caches are trimmed back: stale keys past the offset stay in the buffer,
    which the compiled steps mask."""
    prompt, ahead, tokens = ids(20, seed=5), ids(5, seed=6), ids(8, seed=7)
    results = {}
    for fast in (False, True):
        cache = model.make_cache()
        model.compile_steps = fast
        model(mx.array(prompt), cache)
        snap = cache.mark()
        run(model, fast, [], ahead, cache)
        cache.restore(snap)
        results[fast] = run(model, fast, [], tokens, cache)[0]
    assert_same(results[False], results[True])
    fresh = run(model, False, prompt, tokens)[0]
    assert_same(fresh, results[True])


def test_after_speculative_rewind(model):
    """A verify call (keep_steps), rewind, then one-token steps."""
    prompt, tokens = ids(10, seed=11), ids(6, seed=12)
    results = {}
    for fast in (False, True):
        model.compile_steps = fast
        cache = model.make_cache()
        model(mx.array(prompt), cache)
        cache.keep_steps(True)
        model(mx.array([[11, 12, 13, 14]]), cache)
        cache.keep_steps(False)
        cache.rewind(2)
        results[fast] = run(model, fast, [], tokens, cache)[0]
    assert_same(results[False], results[True])


def test_bfloat16_as_close_to_float32_as_plain(make_checkpoint):
    """bf16 rounds at different points on the two paths, so compare both with float32."""
    path = make_checkpoint("base", dtype="bfloat16")
    prompt, tokens = ids(9, seed=13), ids(10, seed=14)
    ref = run(load_model(path, dtype="float32"), False, prompt, tokens)[0]
    bf16 = load_model(path)
    errs = {fast: [rel_err(a, b) for a, b in zip(run(bf16, fast, prompt, tokens)[0], ref)]
            for fast in (False, True)}
    assert np.mean(errs[True]) <= 1.5 * np.mean(errs[False]), errs
    assert max(errs[True]) <= 0.15, errs


def test_quantized_weights(make_checkpoint):
    prompt, tokens = ids(9, seed=13), ids(10, seed=14)
    q = load_model(make_checkpoint())
    nn.quantize(q, group_size=32, bits=4,
                class_predicate=lambda _, m: hasattr(m, "to_quantized")
                and m.weight.shape[-1] % 32 == 0)
    assert_same(run(q, False, prompt, tokens)[0], run(q, True, prompt, tokens)[0])


def test_quantized_kv_cache_layers_fall_back(model):
    prompt, tokens = ids(9, seed=15), ids(6, seed=16)
    results = {}
    for fast in (False, True):
        cache = model.make_cache()
        quantize_kv(cache, 8)
        results[fast] = run(model, fast, prompt, tokens, cache)[0]
    assert_same(results[False], results[True])


def test_rope_scaling_switched_at_run_time(model):
    prompt, tokens = ids(9, seed=17), ids(6, seed=18)
    run(model, True, prompt, tokens)  # build the compiled steps with plain RoPE first
    set_rope_scaling(model)
    assert_same(run(model, False, prompt, tokens)[0], run(model, True, prompt, tokens)[0])


def test_eager_path_where_compiled_does_not_apply(model, monkeypatch):
    def refuse(*_):
        raise AssertionError("compiled step used")

    monkeypatch.setattr(compiled.CompiledSteps, "layer", refuse)
    padded = model.make_cache(left_pad=[0, 2])
    model(mx.array(ids(5, rows=2)), padded)
    padded.keep_steps(True)  # a left-padded verify is eager
    model(mx.array([[1, 2], [2, 3]]), padded)
    cache = model.make_cache()
    model(mx.array(ids(5)), cache)
    model(mx.array([[1, 2]]), cache)  # a few tokens without keep_steps: a plain prefill
    cache.keep_steps(True)  # a verify call of up to MAX_T tokens is compiled
    model(mx.array([[1] * (compiled.MAX_T + 1)]), cache)


def test_traced_once_per_buffer_size(tiny_checkpoint, monkeypatch):
    traces = {"attention": 0, "deltanet": 0}

    def counted(name, fn):
        def traced(*args):
            traces[name] += 1
            return fn(*args)
        return traced

    monkeypatch.setattr(compiled, "attention_step",
                        counted("attention", compiled.attention_step))
    monkeypatch.setattr(compiled, "deltanet_step",
                        counted("deltanet", compiled.deltanet_step))
    model = load_model(tiny_checkpoint)
    run(model, True, ids(250, seed=19), ids(20, seed=20))  # 251..270: two buffer sizes
    assert traces == {"attention": 2, "deltanet": 3}  # 3 DeltaNet layers, 1 attention


def count_nodes(*arrays) -> int:
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "step.dot")
        mx.export_to_dot(path, *arrays)
        with open(path) as f:
            return len(re.findall(r'shape=rectangle', f.read()))


def test_fewer_primitives_per_step(make_checkpoint):
    """Nodes in the graph of one step (logits + every cache array), as bench/measures.py
    counts them, for the plain modules: compiling them fuses their elementwise ops."""
    model = load_model(make_checkpoint(), specialise=False)
    nodes = {}
    for fast in (False, True):
        _, cache = run(model, fast, ids(5, seed=21), ids(2, seed=22))
        logits = model(mx.array([[3]]), cache)
        nodes[fast] = count_nodes(logits, *cache_arrays(cache))
        mx.eval(logits, cache_arrays(cache))
    assert nodes[True] < 0.9 * nodes[False], nodes
