"""Sampling as explicit distributions, for speculative decoding.

Rejection sampling needs the probabilities a sampler draws from, not just a
draw. `SamplingParams.probs` takes the same steps as sampling.make_sampling_fn
(temperature first, then mlx-lm's top-p / min-p / top-k filters), so it is
exactly the distribution plain decoding draws from.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx


@dataclass
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0

    @classmethod
    def from_config(cls, cfg, vocab_size: int) -> "SamplingParams":
        """The distribution a sampling.SamplingConfig draws from (penalties aside)."""
        from .sampling import effective_top_k

        return cls(temperature=cfg.temperature, top_p=cfg.top_p, min_p=cfg.min_p,
                   top_k=effective_top_k(cfg, vocab_size))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def probs(self, logits: mx.array) -> mx.array:
        """The sampling distribution [B, V] for logits [B, V]."""
        from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

        lp = log_softmax(log_softmax(logits) / self.temperature)
        if 0 < self.top_p < 1.0:
            lp = apply_top_p(lp, self.top_p)
        if self.min_p > 0:
            lp = apply_min_p(lp, self.min_p)
        if self.top_k > 0:
            lp = apply_top_k(lp, self.top_k)
        return mx.softmax(lp, axis=-1)

    def sample(self, logits: mx.array):
        """(token, log-softmax of logits [V]) for logits [1, V]."""
        lp = log_softmax(logits)[0]
        if self.greedy:
            return int(mx.argmax(lp).item()), lp
        return _draw(self.probs(logits)[0]), lp

    def draft(self, logits: mx.array):
        """(token, the distribution it was drawn from) — None for greedy drafts."""
        if self.greedy:
            return int(mx.argmax(logits[0]).item()), None
        q = self.probs(logits)[0]
        return _draw(q), q

    def accept(self, logits: mx.array, draft: int, q):
        """Verify one draft against target logits [1, V]: (accepted, token if not, logprobs)."""
        lp = log_softmax(logits)[0]
        if self.greedy:
            target = int(mx.argmax(lp).item())
            return target == draft, target, lp
        p = self.probs(logits)[0]
        ratio = (p[draft] / q[draft]).item()
        if mx.random.uniform().item() < min(1.0, ratio):
            return True, draft, lp
        residual = mx.maximum(p - q, 0)
        total = residual.sum().item()
        return False, _draw(residual / total if total > 0 else p), lp


def log_softmax(logits: mx.array) -> mx.array:
    logits = logits.astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def _draw(probs: mx.array) -> int:
    return int(mx.random.categorical(mx.log(probs)).item())
