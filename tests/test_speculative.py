"""Speculative decoding with the MTP head: same greedy output, same sampling distribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mlx.core as mx
from mlx_qwen3next import load_model
from mlx_qwen3next.generation import token_stream
from mlx_qwen3next.generation.sampling import SamplingConfig
from mlx_qwen3next.generation.speculative import MTPStats, speculative_stream
from mlx_qwen3next.testing.drafting import drafting_weights
from mlx_qwen3next.testing.tiny import write_checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    def make(name, scale):
        path = tmp_path_factory.mktemp(name)
        write_checkpoint(path, weights=drafting_weights(scale), dtype="float32")
        return load_model(path)

    return {"random": None, "perfect": make("perfect", 0.0), "partial": make("partial", 0.3)}


@pytest.fixture(scope="module")
def random_model(tiny_checkpoint):
    return load_model(tiny_checkpoint)


def greedy_plain(model, prompt, n):
    cache = model.make_cache()
    logits = model(mx.array([prompt]), cache)
    out = []
    for _ in range(n):
        token = int(mx.argmax(logits[0, -1]).item())
        out.append(token)
        logits = model(mx.array([[token]]), cache)
    return out


def spec(model, prompt, n, k, **kw):
    stats = MTPStats()
    cache = model.make_cache()
    tokens = [t for t, *_ in speculative_stream(model, prompt, cache, draft_tokens=k,
                                                max_tokens=n, stats=stats, **kw)]
    return tokens, stats, cache


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("which", ["random", "partial", "perfect"])
def test_greedy_identical_to_plain_decoding(checkpoints, random_model, which, k):
    model = checkpoints[which] or random_model
    rng = np.random.default_rng(k)
    for length, n in [(1, 12), (5, 20), (23, 16)]:
        prompt = rng.integers(0, 500, length).tolist()
        tokens, stats, cache = spec(model, prompt, n, k)
        assert tokens == greedy_plain(model, prompt, n)
        assert cache.offset == length + n - 1  # prompt + yielded tokens but the last


def test_partial_model_mixes_accepts_and_rejects(checkpoints):
    _, stats, _ = spec(checkpoints["partial"], [1, 2, 3, 4], 40, 3)
    assert 0.1 < stats.acceptance < 0.95


def test_good_drafts_are_accepted_and_save_forwards(checkpoints):
    for k in (1, 2, 3):
        _, stats, _ = spec(checkpoints["perfect"], [7, 8, 9], 41, k)
        assert stats.acceptance >= 0.95
        # one prefill forward, then about k + 1 tokens per verify forward
        assert stats.forwards <= 1 + int(np.ceil(40 / (k + 1))) + 1
        assert stats.tokens_per_forward >= 0.9 * (k + 1) * 40 / 41


def test_draft_flags_and_mtp_cache_follow_the_main_cache(checkpoints):
    model = checkpoints["perfect"]
    cache, stats = model.make_cache(), MTPStats()
    out = list(speculative_stream(model, [7, 8, 9], cache, draft_tokens=2, max_tokens=20,
                                  stats=stats))
    flagged = sum(flag for *_, flag in out)
    assert 0 < flagged <= stats.accepted <= flagged + 2  # the last round may be cut short
    assert not out[0][2]  # the first token comes from the prefill
    # one MTP pair per main position, except the pairs of a round cut short at max_tokens
    assert cache.offset - 3 <= cache.mtp_cache.offset <= cache.offset
    cache.trim_kv(5)  # going back (a KV-only trim is enough for this check)
    next(speculative_stream(model, [1], cache, max_tokens=1))
    assert cache.mtp_cache.offset <= cache.offset


def test_early_stop_leaves_cache_at_last_yielded_token(checkpoints):
    model = checkpoints["perfect"]
    prompt = [3, 1, 4, 1, 5]
    cache = model.make_cache()
    stream = speculative_stream(model, prompt, cache, draft_tokens=3, max_tokens=50)
    got = [next(stream)[0] for _ in range(6)]  # stop in the middle of a verify round
    stream.close()
    assert cache.offset == len(prompt) + 5
    # continuing from that cache gives what plain decoding gives
    logits = model(mx.array([[got[-1]]]), cache)
    assert int(mx.argmax(logits[0, -1]).item()) == greedy_plain(model, prompt, 7)[6]


def test_checkpoint_without_mtp_is_a_clear_error(make_checkpoint):
    model = load_model(make_checkpoint("nomtp", mtp=False))
    with pytest.raises(ValueError, match="no MTP head"):
        next(speculative_stream(model, [1, 2], model.make_cache()))


def chi_square_p_value(observed: np.ndarray, expected: np.ndarray) -> float:
    keep = expected > 0
    stat = float((((observed - expected) ** 2)[keep] / expected[keep]).sum())
    dof = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64),
                                         torch.tensor(stat / 2.0, dtype=torch.float64)))


def sample_pairs(n, stream):
    counts = {}
    for _ in range(n):
        out = tuple(t for t, *_ in stream())
        counts[out] = counts.get(out, 0) + 1
    return counts


def test_sampling_distribution_matches_main_model(checkpoints):
    """Pairs (token 1, token 2) sampled with MTP k=2, and without MTP, both follow the
    main model's exact distribution (temperature, then top-p and top-k)."""
    model = checkpoints["partial"]
    prompt = [10, 20, 30]
    sampling = SamplingConfig(temperature=1.3, top_p=0.95, top_k=4)
    # exact joint distribution of the first two tokens under the main model alone
    cache = model.make_cache()
    p1 = np.array(sampling.probs(model(mx.array([prompt]), cache)[:, -1]))[0]
    snap = cache.mark()
    expected = {}
    for t1 in np.nonzero(p1)[0]:
        cache.restore(snap)
        p2 = np.array(sampling.probs(model(mx.array([[int(t1)]]), cache)[:, -1]))[0]
        for t2 in np.nonzero(p2)[0]:
            expected[(int(t1), int(t2))] = p1[t1] * p2[t2]
    mx.random.seed(1234)
    n, stats = 500, MTPStats()
    with_mtp = sample_pairs(n, lambda: speculative_stream(
        model, prompt, model.make_cache(), draft_tokens=2, max_tokens=2, sampling=sampling,
        stats=stats))
    plain = sample_pairs(n, lambda: token_stream(model, prompt, model.make_cache(),
                                                 sampling.sampler(),
                                                 max_tokens=2))
    keys = sorted(expected)
    exp = np.array([expected[k] for k in keys]) * n
    assert 0.05 < stats.acceptance < 0.98  # both branches of the rejection sampler ran
    for counts in (with_mtp, plain):
        assert set(counts) <= set(expected)
        observed = np.array([counts.get(k, 0) for k in keys], float)
        assert chi_square_p_value(observed, exp) > 0.001
