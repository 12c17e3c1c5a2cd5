"""The model against transformers' reference implementation, on tiny random checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mlx.core as mx
from mlx_qwen3next import load_model

from conftest import SHAPES, hf_model


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def random_ids(shape, seed=0, vocab=500):
    return np.random.default_rng(seed).integers(0, vocab, shape)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("norm_topk_prob", [True, False])
def test_logits_match_transformers(make_checkpoint, shape, norm_topk_prob):
    path = make_checkpoint(shape, norm_topk_prob=norm_topk_prob, **SHAPES[shape])
    ids = random_ids((2, 33), seed=1)
    ours = np.array(load_model(path)(mx.array(ids)))
    with torch.no_grad():
        ref = hf_model(path)(torch.tensor(ids)).logits.numpy()
    assert ours.shape == ref.shape == (2, 33, 512)
    assert rel_err(ours, ref) <= 1e-4


def test_prefill_then_decode_matches_full_forward(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    ids = mx.array(random_ids((1, 24), seed=2))
    full = model(ids)
    cache = model.make_cache()
    parts = [model(ids[:, :12], cache)]
    for t in range(12, 24):
        parts.append(model(ids[:, t : t + 1], cache))
    stepped = mx.concatenate(parts, axis=1)
    assert cache.offset == 24
    assert rel_err(stepped, full) <= 1e-4


def test_batch_rows_equal_each_prompt_alone(tiny_checkpoint):
    """Two prompts of different lengths, left-padded into one batch, then decoded."""
    model = load_model(tiny_checkpoint)
    a, b = random_ids((1, 17), seed=3)[0], random_ids((1, 9), seed=4)[0]
    pad = 17 - len(b)
    batch = mx.array(np.stack([a, np.concatenate([np.zeros(pad, np.int64), b])]))
    cache = model.make_cache(left_pad=[0, pad])
    logits = model(batch, cache)
    nxt = mx.array([[5], [7]])
    step = model(nxt, cache)
    for row, (prompt, tok, skip) in enumerate([(a, 5, 0), (b, 7, pad)]):
        alone_cache = model.make_cache()
        alone = model(mx.array(prompt[None]), alone_cache)
        alone_step = model(mx.array([[tok]]), alone_cache)
        assert rel_err(logits[row, skip:], alone[0]) <= 1e-4
        assert rel_err(step[row], alone_step[0]) <= 1e-4


def test_cache_snapshot_restore(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    ids = mx.array(random_ids((1, 10), seed=5))
    cache = model.make_cache()
    model(ids, cache)
    snap = cache.mark()
    first = model(mx.array([[3, 4]]), cache)
    model(mx.array([[9]]), cache)
    cache.restore(snap)
    again = model(mx.array([[3, 4]]), cache)
    assert snap.nbytes > 0
    assert rel_err(again, first) == 0.0


def test_bfloat16_checkpoint(make_checkpoint):
    """bf16 weights: exact against the reference when upcast, close when run in bf16."""
    path = make_checkpoint("base", dtype="bfloat16")
    ids = random_ids((1, 16), seed=6)
    upcast = load_model(path, dtype="float32")(mx.array(ids))
    with torch.no_grad():
        ref = hf_model(path)(torch.tensor(ids)).logits.numpy()
    assert upcast.dtype == mx.float32
    assert rel_err(upcast, ref) <= 1e-4

    bf16_model = load_model(path)
    assert bf16_model.model.embed_tokens.weight.dtype == mx.bfloat16
    bf16 = bf16_model(mx.array(ids))
    assert bf16.dtype == mx.bfloat16
    bf16 = np.array(bf16.astype(mx.float32))
    assert rel_err(bf16, ref) <= 0.1
    assert (bf16.argmax(-1) == ref.argmax(-1)).mean() >= 0.8


def test_rewind_after_verify_equals_never_having_seen_the_tokens(tiny_checkpoint):
    """Speculative verification: keep per-token states, then drop rejected tokens."""
    model = load_model(tiny_checkpoint)
    ids = mx.array(random_ids((1, 10), seed=8))
    for keep in range(0, 5):
        cache = model.make_cache()
        model(ids, cache)
        cache.keep_steps(True)
        verify = model(mx.array([[11, 12, 13, 14]]), cache)
        cache.keep_steps(False)
        cache.rewind(4 - keep)
        assert cache.offset == 10 + keep
        # the per-token states are released, also when nothing was dropped (keep = 4)
        assert all(getattr(c, "step_states", None) is None for c in cache)
        after = model(mx.array([[20, 21]]), cache)

        ref_cache = model.make_cache()
        ref = model(mx.concatenate([ids, mx.array([[11, 12, 13, 14][:keep] + [20, 21]])], 1),
                    ref_cache)
        assert rel_err(verify, model(mx.concatenate([ids, mx.array([[11, 12, 13, 14]])], 1))[:, 10:]) <= 1e-4
        assert rel_err(after, ref[:, -2:]) <= 1e-4
