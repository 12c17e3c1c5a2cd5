"""Sampling: one settings class (validation, defaults from the model card and
generation_config.json), the distribution it draws from, its sampler, and the
logits processors.

Order of operations (as transformers and vLLM do it): penalties on the logits,
then temperature, then top-p / min-p / top-k filtering of the tempered
distribution (mlx-lm's filters), then a categorical draw. Temperature 0 is greedy
(argmax). Plain decoding draws with `sampler`; speculative decoding needs the
distribution itself (`probs`, see acceptance.py), which is the same one.

mlx-lm provides the filters and the repetition penalty. Written here: the
presence penalty over the *generated* tokens (OpenAI / vLLM semantics; mlx-lm's
looks at the last 20 tokens of prompt + reply, which in a chat includes the
end-of-turn token and would push the model away from stopping), and validation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Optional

import mlx.core as mx

# The Qwen3-Next-Instruct model card's recommendation.
CARD_DEFAULTS = dict(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0)


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20  # 0 disables
    min_p: float = 0.0  # 0 disables
    presence_penalty: float = 0.0  # subtracted once from every token already in the reply
    repetition_penalty: float = 1.0  # mlx-lm's sign-aware multiplicative penalty, 1 disables
    repetition_context_size: int = 20
    seed: Optional[int] = None

    def __post_init__(self):
        validate(self)

    def update(self, **changes) -> "SamplingConfig":
        """A validated copy with `changes` applied (unknown names raise ValueError)."""
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                raise ValueError(
                    f"unknown sampling setting {key!r} (known: {', '.join(sorted(known))})"
                )
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def filtered(self, logits: mx.array) -> mx.array:
        """Log-probabilities [B, V] of the distribution drawn from: logits tempered,
        normalised, then filtered (filtered-out tokens at -inf). Not for greedy."""
        from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

        lp = log_softmax(log_softmax(logits) * (1.0 / self.temperature))
        if 0 < self.top_p < 1.0:
            lp = apply_top_p(lp, self.top_p)
        if self.min_p > 0:
            lp = apply_min_p(lp, self.min_p)
        if 0 < self.top_k < lp.shape[-1]:  # k >= the vocabulary keeps everything, like 0
            lp = apply_top_k(lp, self.top_k)
        return lp

    def probs(self, logits: mx.array) -> mx.array:
        """The sampling distribution [B, V] for logits [B, V]."""
        return mx.softmax(self.filtered(logits), axis=-1)

    def sampler(self) -> Callable[[mx.array], mx.array]:
        """logits or log-probabilities [B, V] -> tokens [B]."""
        if self.greedy:
            return lambda logprobs: mx.argmax(logprobs, axis=-1)
        return lambda logprobs: mx.random.categorical(self.filtered(logprobs))


def _number(name, value, integer=False):
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def validate(cfg: SamplingConfig) -> None:
    """Raise ValueError (one line) for a value outside its range."""
    if _number("temperature", cfg.temperature) < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {cfg.temperature}")
    if not 0 < _number("top_p", cfg.top_p) <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {cfg.top_p}")
    if _number("top_k", cfg.top_k, integer=True) < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables it), got {cfg.top_k}")
    if not 0 <= _number("min_p", cfg.min_p) <= 1:
        raise ValueError(f"min_p must be in [0, 1], got {cfg.min_p}")
    if not -2 <= _number("presence_penalty", cfg.presence_penalty) <= 2:
        raise ValueError(f"presence_penalty must be in [-2, 2], got {cfg.presence_penalty}")
    if _number("repetition_penalty", cfg.repetition_penalty) <= 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 disables it), "
                         f"got {cfg.repetition_penalty}")
    if _number("repetition_context_size", cfg.repetition_context_size, integer=True) < 1:
        raise ValueError(f"repetition_context_size must be >= 1, "
                         f"got {cfg.repetition_context_size}")
    if cfg.seed is not None and not 0 <= _number("seed", cfg.seed, integer=True) < 2**64:
        raise ValueError(f"seed must be an integer from 0 to 2**64 - 1, got {cfg.seed}")


def log_softmax(logits: mx.array) -> mx.array:
    logits = logits.astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def make_presence_penalty(penalty: float, skip: int):
    """Subtract `penalty` once from each token that appears in tokens[skip:] (the reply)."""

    def presence_penalty(tokens: mx.array, logits: mx.array) -> mx.array:
        reply = tokens[skip:]
        if reply.size == 0:
            return logits
        seen = mx.zeros((logits.shape[-1],), logits.dtype).at[reply].maximum(1)
        return logits - penalty * seen

    return presence_penalty


def make_processors(cfg: SamplingConfig, prompt_len: int) -> list:
    """Logits processors (mlx-lm contract: (tokens, logits) -> logits).

    `tokens` is what the token loop fed in this call: the prompt (prompt_len
    tokens) followed by the reply so far.
    """
    from mlx_lm.sample_utils import make_repetition_penalty

    procs = []
    if cfg.repetition_penalty != 1.0:
        procs.append(make_repetition_penalty(cfg.repetition_penalty,
                                             cfg.repetition_context_size))
    if cfg.presence_penalty != 0.0:
        procs.append(make_presence_penalty(cfg.presence_penalty, prompt_len))
    return procs


def generation_defaults(path) -> dict:
    """Sampling defaults from a checkpoint's generation_config.json (empty if none)."""
    from ..checkpoints.tokenizer import generation_config

    gen = generation_config(Path(path))
    out = {k: gen[k] for k in ("temperature", "top_p", "top_k", "min_p",
                               "repetition_penalty", "presence_penalty") if k in gen}
    if gen.get("do_sample") is False:
        out["temperature"] = 0.0
    try:
        SamplingConfig(**{**CARD_DEFAULTS, **out})
    except ValueError as e:
        raise ValueError(f"{Path(path) / 'generation_config.json'}: {e}") from None
    return out


def default_sampling(tokenizer=None, model=None) -> SamplingConfig:
    """The model card's settings, overridden by the checkpoint's generation_config.json.

    The checkpoint is found through `model.generation_config` (a dict) if set,
    else the tokenizer's `name_or_path` (the directory `load` read it from).
    """
    found = getattr(model, "generation_config", None) if model is not None else None
    if not isinstance(found, dict):
        path = getattr(getattr(tokenizer, "_tokenizer", tokenizer), "name_or_path", None)
        found = generation_defaults(path) if path else {}
    return SamplingConfig(**{**CARD_DEFAULTS, **found})


def resolve_sampling(base: SamplingConfig, **overrides) -> SamplingConfig:
    """`base` with the non-None overrides applied."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    return base.update(**changes) if changes else base
