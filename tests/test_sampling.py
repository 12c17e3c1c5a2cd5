"""Sampling: the filters shape the distribution as defined (temperature first, then
top-k / top-p / min-p), penalties, defaults and validation. Statistical checks run
the real sampler on crafted log-probabilities at fixed seeds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import mlx_qwen3next  # noqa: F401
import mlx.core as mx
from mlx_qwen3next.generation.sampling import (
    CARD_DEFAULTS, SamplingConfig, default_sampling, generation_defaults, make_processors,
)

PROBS = [0.5, 0.3, 0.15, 0.05]
DRAWS = 6000


def frequencies(cfg: SamplingConfig, probs=PROBS, draws=DRAWS, seed=0, processors=(),
                history=None) -> np.ndarray:
    """Draw `draws` tokens from `probs` (batched: every row the same) through the sampler."""
    logits = mx.log(mx.array([probs] * draws))
    for proc in processors:
        logits = proc(history, logits)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    mx.random.seed(seed)
    tokens = np.array(cfg.sampler()(logprobs))
    return np.bincount(tokens, minlength=len(probs)) / draws


def expected(weights) -> np.ndarray:
    w = np.array(weights, dtype=np.float64)
    return w / w.sum()


def close(freq, want, tol=0.025):
    assert np.abs(freq - want).max() < tol, (freq, want)


def cfg(**kw) -> SamplingConfig:
    base = dict(temperature=1.0, top_p=1.0, top_k=0, min_p=0.0)
    return SamplingConfig(**{**base, **kw})


def test_plain_temperature_one_follows_the_model():
    close(frequencies(cfg()), expected(PROBS))


def test_temperature_sharpens_as_p_to_the_one_over_t():
    close(frequencies(cfg(temperature=0.5)), expected(np.array(PROBS) ** 2))


def test_top_p_keeps_the_smallest_nucleus_with_mass_at_least_p():
    # 0.5 < 0.75 <= 0.5 + 0.3: tokens 0 and 1, renormalised
    freq = frequencies(cfg(top_p=0.75))
    close(freq, expected([0.5, 0.3, 0, 0]))
    assert freq[2] == freq[3] == 0


def test_top_p_is_taken_on_the_tempered_distribution():
    # at T = 2 the probabilities are ~[.38, .29, .21, .12]: the 0.75 nucleus has 3 tokens
    tempered = expected(np.array(PROBS) ** 0.5)
    freq = frequencies(cfg(temperature=2.0, top_p=0.75))
    close(freq, expected([*tempered[:3], 0]))
    assert freq[3] == 0


def test_min_p_drops_tokens_below_min_p_times_the_top_probability():
    # threshold 0.2 * 0.5 = 0.1: token 3 (0.05) goes
    freq = frequencies(cfg(min_p=0.2))
    close(freq, expected([0.5, 0.3, 0.15, 0]))
    assert freq[3] == 0


def test_top_k_keeps_the_k_most_likely():
    freq = frequencies(cfg(top_k=2))
    close(freq, expected([0.5, 0.3, 0, 0]))


def test_top_k_one_is_greedy_at_any_temperature():
    for t in (0.3, 1.0, 5.0):
        assert frequencies(cfg(temperature=t, top_k=1))[0] == 1.0


def test_top_k_at_least_the_vocab_keeps_everything():
    close(frequencies(cfg(top_k=4)), expected(PROBS))
    close(frequencies(cfg(top_k=100)), expected(PROBS))


def test_presence_penalty_subtracts_once_per_token_present_in_the_reply():
    uniform = [0.25] * 4
    # prompt = [3, 3], reply so far = [0, 0, 1]: tokens 0 and 1 are penalised once each
    history = mx.array([3, 3, 0, 0, 1])
    procs = make_processors(cfg(presence_penalty=1.0), prompt_len=2)
    freq = frequencies(cfg(), uniform, processors=procs, history=history)
    e = math.exp(-1.0)
    close(freq, expected([e, e, 1, 1]))


def test_negative_presence_penalty_encourages_repeats():
    procs = make_processors(cfg(presence_penalty=-1.0), prompt_len=0)
    freq = frequencies(cfg(), [0.25] * 4, processors=procs, history=mx.array([2]))
    close(freq, expected([1, 1, math.e, 1]))


def test_presence_penalty_ignores_the_prompt():
    procs = make_processors(cfg(presence_penalty=2.0), prompt_len=3)
    freq = frequencies(cfg(), [0.25] * 4, processors=procs, history=mx.array([0, 1, 2]))
    close(freq, expected([1, 1, 1, 1]))


def test_repetition_penalty_uses_mlx_lm():
    # positive logits are divided by the penalty: log(0.25) < 0 is multiplied instead
    procs = make_processors(cfg(repetition_penalty=2.0), prompt_len=0)
    freq = frequencies(cfg(), [0.25] * 4, processors=procs, history=mx.array([1]))
    close(freq, expected([1, 0.25, 1, 1]))  # exp(2 log .25) / exp(log .25) = .25


def test_temperature_zero_is_argmax():
    freq = frequencies(SamplingConfig(temperature=0.0), [0.2, 0.1, 0.6, 0.1], draws=50)
    assert freq[2] == 1.0


def test_same_seed_same_draws():
    assert (frequencies(cfg(), seed=3, draws=200) == frequencies(cfg(), seed=3, draws=200)).all()


@pytest.mark.parametrize("change, message", [
    (dict(temperature=-0.1), "temperature must be >= 0"),
    (dict(temperature=float("nan")), "temperature must be finite"),
    (dict(top_p=0.0), "top_p must be in (0, 1]"),
    (dict(top_p=1.5), "top_p must be in (0, 1]"),
    (dict(top_k=-1), "top_k must be >= 0"),
    (dict(top_k=2.5), "top_k must be an integer"),
    (dict(min_p=1.5), "min_p must be in [0, 1]"),
    (dict(presence_penalty=3), "presence_penalty must be in [-2, 2]"),
    (dict(repetition_penalty=0), "repetition_penalty must be > 0"),
    (dict(seed=-1), "seed must be an integer from 0 to 2**64 - 1"),
    (dict(temperature="hot"), "temperature must be a number"),
    (dict(colour=1), "unknown sampling setting 'colour'"),
])
def test_bad_values_raise_one_clear_line(change, message):
    with pytest.raises(ValueError) as err:
        SamplingConfig().update(**change)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_defaults_are_the_model_card_then_generation_config(tmp_path):
    assert default_sampling() == SamplingConfig(**CARD_DEFAULTS)
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"temperature": 0.6, "top_k": 50, "presence_penalty": 1.5}))
    assert generation_defaults(tmp_path) == {"temperature": 0.6, "top_k": 50,
                                             "presence_penalty": 1.5}
    (tmp_path / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    assert generation_defaults(tmp_path)["temperature"] == 0.0


def test_defaults_found_through_the_loaded_tokenizer(tiny_checkpoint):
    from mlx_qwen3next import load

    model, tokenizer = load(tiny_checkpoint)
    got = default_sampling(tokenizer, model)
    assert (got.temperature, got.top_p, got.top_k, got.min_p) == (0.7, 0.8, 20, 0.0)
