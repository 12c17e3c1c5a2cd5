"""Compiled verify and MTP draft steps (model/compiled.py) against the eager modules."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from conftest import SHAPES
from mlx_qwen3next import load_model
from mlx_qwen3next.cache import KVCache
from mlx_qwen3next.generation.kv_quant import quantize_kv
from mlx_qwen3next import kernels
from mlx_qwen3next.kernels.decode import state_after
from mlx_qwen3next.model import compiled
from mlx_qwen3next.generation.speculative import MTPStats
from test_compiled_decode import TOL, cache_arrays, ids, rel_err
from mlx_qwen3next.generation import token_stream
from test_speculative import drafting_weights, greedy_plain, spec
from mlx_qwen3next.testing.tiny import write_checkpoint


@pytest.fixture(scope="module", params=sorted(SHAPES))
def model(request, make_checkpoint):
    return load_model(make_checkpoint(request.param, **SHAPES[request.param]))


@pytest.fixture(scope="module")
def partial_model(tmp_path_factory):
    """Drafts that the main model accepts sometimes (test_speculative.drafting_weights)."""
    path = tmp_path_factory.mktemp("partial")
    write_checkpoint(path, weights=drafting_weights(0.3), dtype="float32")
    return load_model(path)


def verify(model, fast: bool, prompt, fed, keep=None, after=()):
    """Prefill `prompt`, verify `fed` (rows of ids) with keep_steps, optionally rewind to
    the first `keep` of them, then one-token steps over `after`.
    -> (verify logits, logits of each later step, cache)"""
    model.compile_steps = fast
    cache = model.make_cache()
    if prompt and prompt[0]:
        model(mx.array(prompt), cache)
    cache.keep_steps(True)
    logits = model(mx.array(fed), cache)
    cache.keep_steps(False)
    mx.eval(logits, cache_arrays(cache))
    if keep is not None:
        cache.rewind(len(fed[0]) - keep)
    steps = []
    for t in after:
        steps.append(model(mx.array([[t]] * len(fed)), cache))
        mx.eval(steps[-1], cache_arrays(cache))
    model.compile_steps = True
    return logits, steps, cache


@pytest.mark.parametrize("prompt_len", [0, 9, 253])
@pytest.mark.parametrize("T", [2, 3, 4, 5])
def test_same_logits_and_states(model, T, prompt_len):
    """253 + T crosses the 256-position KV buffer for T >= 4."""
    prompt, fed = ids(prompt_len, seed=T), ids(T, seed=prompt_len + T)
    plain, _, pc = verify(model, False, prompt, fed)
    fast, _, lc = verify(model, True, prompt, fed)
    assert rel_err(fast, plain) <= TOL
    assert lc.offset == pc.offset == prompt_len + T
    for a, b in zip(lc, pc):
        if isinstance(a, KVCache):
            assert a.offset == b.offset and a.keys.shape[2] % KVCache.step == 0
            assert rel_err(a.keys[..., :a.offset, :], b.keys[..., :b.offset, :]) <= TOL
            assert rel_err(a.values[..., :a.offset, :], b.values[..., :b.offset, :]) <= TOL
        else:
            assert a.steps == b.steps == T
            for t in range(T + 1):
                sa = state_after(a.step_first, a.step_terms, t)
                sb = state_after(b.step_first, b.step_terms, t)
                if not mx.any(sb).item():  # an empty cache: zeros
                    assert not mx.any(sa).item()
                else:
                    assert rel_err(sa, sb) <= TOL, t
            assert rel_err(a.step_window, b.step_window) <= TOL
            assert rel_err(a.conv_state, b.conv_state) <= TOL


@pytest.mark.parametrize("T", [2, 3, 4, 5])
def test_rewind_to_every_accepted_position(model, T):
    prompt, fed, after = ids(12, seed=30 + T), ids(T, seed=40 + T), ids(3, seed=50 + T)[0]
    for keep in range(1, T + 1):
        plain = verify(model, False, prompt, fed, keep, after)[1]
        fast = verify(model, True, prompt, fed, keep, after)[1]
        # and what plain decoding of the kept tokens gives, without any verify call
        fresh = verify(model, False, [prompt[0] + fed[0][:keep]], [[after[0]]])[0]
        for step, (a, b) in enumerate(zip(fast, plain)):
            assert rel_err(a, b) <= TOL, (keep, step)
        assert rel_err(fast[0], fresh) <= 1e-4, keep


def test_batch_rows(model):
    prompt, fed, after = ids(9, seed=60, rows=2), ids(4, seed=61, rows=2), ids(2, seed=62)[0]
    plain_logits, plain, _ = verify(model, False, prompt, fed, 2, after)
    fast_logits, fast, _ = verify(model, True, prompt, fed, 2, after)
    assert rel_err(fast_logits, plain_logits) <= TOL
    for a, b in zip(fast, plain):
        assert rel_err(a, b) <= TOL


def test_verify_as_the_first_call(model):
    """No prefill: the DeltaNet caches start empty."""
    fed, after = ids(3, seed=63), ids(2, seed=64)[0]
    plain_logits, plain, _ = verify(model, False, [], fed, 2, after)
    fast_logits, fast, _ = verify(model, True, [], fed, 2, after)
    assert rel_err(fast_logits, plain_logits) <= TOL
    assert rel_err(fast[-1], plain[-1]) <= TOL


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_greedy_speculative_identical_to_plain_greedy(partial_model, k):
    """Speculative greedy decoding on the fast path == plain greedy decoding on the plain
    path; 250 + 30 tokens cross the 256-position KV buffer."""
    rng = np.random.default_rng(k)
    for length, n in [(5, 20), (250, 30)]:
        prompt = rng.integers(0, 500, length).tolist()
        partial_model.compile_steps = False
        want = greedy_plain(partial_model, prompt, n)
        partial_model.compile_steps = True
        stats = MTPStats()
        tokens, stats, cache = spec(partial_model, prompt, n, k)
        assert tokens == want
        assert cache.offset == length + n - 1
        assert 0 < stats.accepted < stats.drafted  # both accepted and rejected drafts


def test_compiled_steps_used_for_verify_and_drafts(partial_model, monkeypatch):
    calls = {"verify": 0, "mtp": 0}
    layer, draft = compiled.CompiledSteps.layer, compiled.CompiledSteps.draft

    def counted_layer(self, i, x, cache, verify):
        calls["verify"] += (i == 0 and verify)
        return layer(self, i, x, cache, verify)

    def counted_draft(self, *args):
        calls["mtp"] += 1
        return draft(self, *args)

    monkeypatch.setattr(compiled.CompiledSteps, "layer", counted_layer)
    monkeypatch.setattr(compiled.CompiledSteps, "draft", counted_draft)
    _, stats, _ = spec(partial_model, ids(20, seed=76)[0], 12, 2)  # prefills: eager
    assert calls["verify"] == stats.forwards - 1  # every forward but the prefill
    assert calls["mtp"] == stats.drafted


def test_decode_and_verify_reach_the_delta_rule_entry_points(partial_model, monkeypatch):
    """Prefill, every decode step and every verify go through kernels.gated_delta /
    gated_delta_steps, once per DeltaNet layer per forward."""
    from mlx_qwen3next.model import deltanet

    calls = {"gated_delta": [], "gated_delta_steps": []}
    for name in calls:
        fn = getattr(kernels, name)
        monkeypatch.setattr(deltanet, name, lambda *a, _f=fn, _n=name: (
            calls[_n].append(a[0].shape[1]), _f(*a))[1])
    n_linear = sum(layer.is_linear for layer in partial_model.layers)
    greedy = lambda lp: mx.argmax(lp, axis=-1)
    tokens = {}
    for fast in (False, True):  # eagerly, every call; compiled, the one trace that then runs
        partial_model.compile_steps = fast
        partial_model.reset_compiled()
        calls["gated_delta"].clear()
        stream = token_stream(partial_model, ids(9, seed=77)[0], partial_model.make_cache(),
                              greedy, max_tokens=6)
        tokens[fast] = [t for t, _ in stream]
        steps = calls["gated_delta"].count(1) // n_linear
        assert steps == 1 if fast else steps >= 5
    assert tokens[True] == tokens[False]
    calls["gated_delta"].clear()
    _, stats, _ = spec(partial_model, ids(8, seed=78)[0], 10, 2)
    assert stats.forwards > 2
    assert calls["gated_delta_steps"] == [3] * n_linear  # token + 2 drafts, traced once
    assert 1 not in calls["gated_delta"]  # no verify fell back to one-token calls


def test_traced_once_per_shape(tiny_checkpoint, monkeypatch):
    traces = {}

    def counted(name, fn):
        def traced(*args):
            x = args[2] if name == "deltanet" else args[1]  # after the layer (and verify flag)
            key = (name, x.shape[1])
            traces[key] = traces.get(key, 0) + 1
            return fn(*args)
        return traced

    for name in ("attention", "deltanet"):
        monkeypatch.setattr(compiled, f"{name}_step",
                            counted(name, getattr(compiled, f"{name}_step")))
    model = load_model(tiny_checkpoint)
    cache = model.make_cache()
    model(mx.array(ids(240, seed=65)), cache)
    for _ in range(3):  # each round advances T - 1: 250, 260 (the buffer grows), 270
        for T in (2, 3, 4, 5):
            cache.keep_steps(True)
            mx.eval(model(mx.array(ids(T, seed=T)), cache))
            cache.keep_steps(False)
            cache.rewind(1)
    # 3 DeltaNet layers, each traced once per T; the attention layer once per
    # (T, buffer size): 256 and 512 positions
    assert traces == {**{("deltanet", T): 3 for T in (2, 3, 4, 5)},
                      **{("attention", T): 2 for T in (2, 3, 4, 5)}}
    assert cache[3].keys.shape[2] == 2 * KVCache.step


@pytest.mark.parametrize("T", [1, 2, 3, 5])
def test_mtp_step_same_as_plain(model, T):
    """Draft steps of T tokens on the fast path, a KV-only trim, another step."""
    H = model.config.hidden_size
    hidden = mx.random.normal((1, 12, H), key=mx.random.key(T))
    next_ids = mx.array(ids(12, seed=66))
    out = {}
    for fast in (False, True):
        model.compile_steps = fast
        cache = model.mtp.make_cache()
        model.mtp_forward(hidden, next_ids, cache)  # 12 tokens: the plain path either way
        steps = [model.mtp_forward(hidden[:, :T] * s, next_ids[:, :T] + s, cache)
                 for s in range(1, 4)]
        cache.trim_kv(2)
        steps.append(model.mtp_forward(hidden[:, :1], next_ids[:, :1], cache))
        mx.eval(steps)
        out[fast] = steps
    model.compile_steps = True
    for (a, ha), (b, hb) in zip(out[True], out[False]):
        assert rel_err(a, b) <= TOL and rel_err(ha, hb) <= TOL


def test_mtp_traced_once_per_shape(tiny_checkpoint, monkeypatch):
    traces = []
    step = compiled.mtp_step

    def counted(mtp, e, *args):
        traces.append(e.shape[1])
        return step(mtp, e, *args)

    monkeypatch.setattr(compiled, "mtp_step", counted)
    model = load_model(tiny_checkpoint)
    cache = model.mtp.make_cache()
    H = model.config.hidden_size
    for T in (1, 1, 2, 1, 2, 3, 1):
        mx.eval(model.mtp_forward(mx.ones((1, T, H)), mx.array([[3] * T]), cache))
    assert sorted(traces) == [1, 2, 3]


def test_quantized_weights(make_checkpoint):
    q = load_model(make_checkpoint())
    nn.quantize(q, group_size=32, bits=4,
                class_predicate=lambda _, m: hasattr(m, "to_quantized")
                and m.weight.shape[-1] % 32 == 0)
    prompt, fed, after = ids(9, seed=67), ids(4, seed=68), ids(2, seed=69)[0]
    plain_logits, plain, _ = verify(q, False, prompt, fed, 3, after)
    fast_logits, fast, _ = verify(q, True, prompt, fed, 3, after)
    assert rel_err(fast_logits, plain_logits) <= TOL
    assert rel_err(fast[-1], plain[-1]) <= TOL


def test_quantized_kv_cache_layers_fall_back(model):
    prompt, fed, after = ids(9, seed=70), ids(3, seed=71), ids(2, seed=72)[0]
    results = {}
    for fast in (False, True):
        model.compile_steps = fast
        cache = model.make_cache()
        quantize_kv(cache, 8)
        model(mx.array(prompt), cache)
        cache.keep_steps(True)
        logits = model(mx.array(fed), cache)
        cache.keep_steps(False)
        cache.rewind(1)
        results[fast] = [logits] + [model(mx.array([[t]]), cache) for t in after]
    model.compile_steps = True
    for a, b in zip(results[True], results[False]):
        assert rel_err(a, b) <= 1e-4


def test_bfloat16_as_close_to_float32_as_plain(make_checkpoint):
    """bf16 rounds at different points on the two paths, so compare both with float32,
    over a few prompts (one prompt's error is noisy)."""
    path = make_checkpoint("base", dtype="bfloat16")
    f32, bf16 = load_model(path, dtype="float32"), load_model(path)
    errs = {False: [], True: []}
    for seed in range(4):
        prompt, fed = ids(9, seed=73 + seed), ids(5, seed=74 + seed)
        after = ids(3, seed=75 + seed)[0]
        ref_logits, ref, _ = verify(f32, False, prompt, fed, 3, after)
        for fast in (False, True):
            logits, steps, _ = verify(bf16, fast, prompt, fed, 3, after)
            errs[fast] += [rel_err(a, b) for a, b in zip([logits] + steps, [ref_logits] + ref)]
    assert np.mean(errs[True]) <= 1.5 * np.mean(errs[False]), errs
    assert max(errs[True]) <= 1.5 * max(errs[False]), errs
