"""Lean verify (model/lean_verify.py) and the lean MTP step against the plain path."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from conftest import SHAPES
from mlx_qwen3next import load_model
from mlx_qwen3next.cache import KVCache
from mlx_qwen3next.kv_quant import quantize_kv
from mlx_qwen3next.model import lean_decode, lean_verify
from mlx_qwen3next.model.lean_verify import VerifyStates
from mlx_qwen3next.speculative import MTPStats
from test_lean_decode import TOL, cache_arrays, ids, rel_err
from test_speculative import drafting_weights, greedy_plain, spec
from mlx_qwen3next.tiny import write_checkpoint


@pytest.fixture(scope="module", params=sorted(SHAPES))
def model(request, make_checkpoint):
    return load_model(make_checkpoint(request.param, **SHAPES[request.param]))


@pytest.fixture(scope="module")
def partial_model(tmp_path_factory):
    """Drafts that the main model accepts sometimes (test_speculative.drafting_weights)."""
    path = tmp_path_factory.mktemp("partial")
    write_checkpoint(path, weights=drafting_weights(0.3), dtype="float32")
    return load_model(path)


def verify(model, lean: bool, prompt, fed, keep=None, after=()):
    """Prefill `prompt`, verify `fed` (rows of ids) with keep_steps, optionally rewind to
    the first `keep` of them, then one-token steps over `after`.
    -> (verify logits, logits of each later step, cache)"""
    model.model.lean = lean
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
    model.model.lean = True
    return logits, steps, cache


@pytest.mark.parametrize("prompt_len", [0, 9, 253])
@pytest.mark.parametrize("T", [2, 3, 4, 5])
def test_same_logits_and_states(model, T, prompt_len):
    """253 + T crosses the 256-position KV buffer for T >= 4."""
    prompt, fed = ids(prompt_len, seed=T), ids(T, seed=prompt_len + T)
    plain, _, pc = verify(model, False, prompt, fed)
    lean, _, lc = verify(model, True, prompt, fed)
    assert rel_err(lean, plain) <= TOL
    assert lc.offset == pc.offset == prompt_len + T
    for a, b in zip(lc, pc):
        if isinstance(a, KVCache):
            assert a.offset == b.offset and a.keys.shape[2] % KVCache.step == 0
            assert rel_err(a.keys[..., :a.offset, :], b.keys[..., :b.offset, :]) <= TOL
            assert rel_err(a.values[..., :a.offset, :], b.values[..., :b.offset, :]) <= TOL
        else:
            assert isinstance(a.step_states, VerifyStates)
            assert len(a.step_states) == len(b.step_states) == T + 1
            for t in range(T + 1):
                if b.step_states[t] is None:  # an empty cache: the plain path's zeros
                    assert not mx.any(a.step_states[t]).item()
                else:
                    assert rel_err(a.step_states[t], b.step_states[t]) <= TOL, t
            assert rel_err(a.step_window, b.step_window) <= TOL
            assert rel_err(a.conv_state, b.conv_state) <= TOL


@pytest.mark.parametrize("T", [2, 3, 4, 5])
def test_rewind_to_every_accepted_position(model, T):
    prompt, fed, after = ids(12, seed=30 + T), ids(T, seed=40 + T), ids(3, seed=50 + T)[0]
    for keep in range(1, T + 1):
        plain = verify(model, False, prompt, fed, keep, after)[1]
        lean = verify(model, True, prompt, fed, keep, after)[1]
        # and what plain decoding of the kept tokens gives, without any verify call
        fresh = verify(model, False, [prompt[0] + fed[0][:keep]], [[after[0]]])[0]
        for step, (a, b) in enumerate(zip(lean, plain)):
            assert rel_err(a, b) <= TOL, (keep, step)
        assert rel_err(lean[0], fresh) <= 1e-4, keep


def test_batch_rows(model):
    prompt, fed, after = ids(9, seed=60, rows=2), ids(4, seed=61, rows=2), ids(2, seed=62)[0]
    plain_logits, plain, _ = verify(model, False, prompt, fed, 2, after)
    lean_logits, lean, _ = verify(model, True, prompt, fed, 2, after)
    assert rel_err(lean_logits, plain_logits) <= TOL
    for a, b in zip(lean, plain):
        assert rel_err(a, b) <= TOL


def test_verify_as_the_first_call(model):
    """No prefill: the DeltaNet caches start empty."""
    fed, after = ids(3, seed=63), ids(2, seed=64)[0]
    plain_logits, plain, _ = verify(model, False, [], fed, 2, after)
    lean_logits, lean, _ = verify(model, True, [], fed, 2, after)
    assert rel_err(lean_logits, plain_logits) <= TOL
    assert rel_err(lean[-1], plain[-1]) <= TOL


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_greedy_speculative_identical_to_plain_greedy(partial_model, k):
    """Speculative greedy decoding on the lean path == plain greedy decoding on the plain
    path; 250 + 30 tokens cross the 256-position KV buffer."""
    rng = np.random.default_rng(k)
    for length, n in [(5, 20), (250, 30)]:
        prompt = rng.integers(0, 500, length).tolist()
        partial_model.model.lean = False
        want = greedy_plain(partial_model, prompt, n)
        partial_model.model.lean = True
        stats = MTPStats()
        tokens, stats, cache = spec(partial_model, prompt, n, k)
        assert tokens == want
        assert cache.offset == length + n - 1
        assert 0 < stats.accepted < stats.drafted  # both accepted and rejected drafts


def test_lean_path_used_for_verify_and_drafts(partial_model, monkeypatch):
    calls = {"verify": 0, "mtp": 0}
    hidden, mtp_call = lean_decode.LeanDecoder.hidden, lean_decode.LeanMTP.__call__

    def counted_hidden(self, input_ids, cache):
        calls["verify"] += input_ids.shape[1] > 1
        return hidden(self, input_ids, cache)

    def counted_mtp(self, *args):
        calls["mtp"] += 1
        return mtp_call(self, *args)

    monkeypatch.setattr(lean_decode.LeanDecoder, "hidden", counted_hidden)
    monkeypatch.setattr(lean_decode.LeanMTP, "__call__", counted_mtp)
    _, stats, _ = spec(partial_model, ids(8, seed=76)[0], 12, 2)  # prefills: plain
    assert calls["verify"] == stats.forwards - 1  # every forward but the prefill
    assert calls["mtp"] == stats.drafted


def test_traced_once_per_shape(tiny_checkpoint, monkeypatch):
    traces = {}

    def counted(name, fn):
        def traced(*args):
            key = (name, args[1].shape[0])  # x [B*T, hidden]
            traces[key] = traces.get(key, 0) + 1
            return fn(*args)
        return traced

    for name in ("attention_layer", "deltanet_layer"):
        monkeypatch.setattr(lean_verify, name, counted(name, getattr(lean_verify, name)))
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
    assert traces == {**{("deltanet_layer", T): 3 for T in (2, 3, 4, 5)},
                      **{("attention_layer", T): 2 for T in (2, 3, 4, 5)}}
    assert cache[3].keys.shape[2] == 2 * KVCache.step


@pytest.mark.parametrize("T", [1, 2, 3, 5])
def test_mtp_step_same_as_plain(model, T):
    """Draft steps of T tokens on the lean path, a KV-only trim, another step."""
    H = model.config.hidden_size
    hidden = mx.random.normal((1, 12, H), key=mx.random.key(T))
    next_ids = mx.array(ids(12, seed=66))
    out = {}
    for lean in (False, True):
        model.model.lean = lean
        cache = model.mtp.make_cache()
        model.mtp_forward(hidden, next_ids, cache)  # 12 tokens: the plain path either way
        steps = [model.mtp_forward(hidden[:, :T] * s, next_ids[:, :T] + s, cache)
                 for s in range(1, 4)]
        cache.trim_kv(2)
        steps.append(model.mtp_forward(hidden[:, :1], next_ids[:, :1], cache))
        mx.eval(steps)
        out[lean] = steps
    model.model.lean = True
    for (a, ha), (b, hb) in zip(out[True], out[False]):
        assert rel_err(a, b) <= TOL and rel_err(ha, hb) <= TOL


def test_mtp_traced_once_per_shape(tiny_checkpoint, monkeypatch):
    traces = []

    def counted(mtp, layer_fn, e, *args):
        traces.append(e.shape[0])
        return step(mtp, layer_fn, e, *args)

    step = lean_decode._mtp_step
    monkeypatch.setattr(lean_decode, "_mtp_step", counted)
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
    lean_logits, lean, _ = verify(q, True, prompt, fed, 3, after)
    assert rel_err(lean_logits, plain_logits) <= TOL
    assert rel_err(lean[-1], plain[-1]) <= TOL


def test_quantized_kv_cache_layers_fall_back(model):
    prompt, fed, after = ids(9, seed=70), ids(3, seed=71), ids(2, seed=72)[0]
    results = {}
    for lean in (False, True):
        model.model.lean = lean
        cache = model.make_cache()
        quantize_kv(cache, 8)
        model(mx.array(prompt), cache)
        cache.keep_steps(True)
        logits = model(mx.array(fed), cache)
        cache.keep_steps(False)
        cache.rewind(1)
        results[lean] = [logits] + [model(mx.array([[t]]), cache) for t in after]
    model.model.lean = True
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
        for lean in (False, True):
            logits, steps, _ = verify(bf16, lean, prompt, fed, 3, after)
            errs[lean] += [rel_err(a, b) for a, b in zip([logits] + steps, [ref_logits] + ref)]
    assert np.mean(errs[True]) <= 1.5 * np.mean(errs[False]), errs
    assert max(errs[True]) <= 1.5 * max(errs[False]), errs
