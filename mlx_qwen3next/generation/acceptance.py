"""Speculative sampling's maths: draw a draft, and accept or replace it so that the
tokens follow the main model's distribution (the SamplingConfig's `probs`).

Greedy accepts a draft only when it is the main model's argmax, so the output
equals plain greedy decoding. Otherwise a draft d drawn from q is kept with
probability min(1, p[d] / q[d]), and a rejected one is replaced by a draw from
max(p - q, 0), renormalised (Leviathan et al. 2023; Chen et al. 2023).
"""

from __future__ import annotations

import mlx.core as mx

from .sampling import SamplingConfig, log_softmax


def sample(cfg: SamplingConfig, logits: mx.array):
    """(token, log-softmax of logits [V]) for logits [1, V]."""
    lp = log_softmax(logits)[0]
    if cfg.greedy:
        return int(mx.argmax(lp).item()), lp
    return _draw(cfg.probs(logits)[0]), lp


def draft(cfg: SamplingConfig, logits: mx.array):
    """(token, the distribution it was drawn from); None for greedy drafts."""
    if cfg.greedy:
        return int(mx.argmax(logits[0]).item()), None
    q = cfg.probs(logits)[0]
    return _draw(q), q


def accept(cfg: SamplingConfig, logits: mx.array, token: int, q):
    """Verify one draft against target logits [1, V]: (accepted, the token kept, logprobs)."""
    lp = log_softmax(logits)[0]
    if cfg.greedy:
        target = int(mx.argmax(lp).item())
        return target == token, target, lp
    p = cfg.probs(logits)[0]
    if mx.random.uniform().item() < min(1.0, (p[token] / q[token]).item()):
        return True, token, lp
    residual = mx.maximum(p - q, 0)
    total = residual.sum().item()
    return False, _draw(residual / total if total > 0 else p), lp


def _draw(probs: mx.array) -> int:
    return int(mx.random.categorical(mx.log(probs)).item())
