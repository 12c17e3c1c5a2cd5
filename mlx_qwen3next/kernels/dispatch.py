"""The delta-rule entry points, and the policy that picks a path for each call.

`gated_delta` serves prefill, one-token decode and plain few-token calls;
`gated_delta_steps` a speculative verify, which also needs the per-token states
for a rewind (decode.py forms them on demand; no fused kernel returns them).

A policy maps a call's length to a path. `PLAIN` (the default) uses our ops:
decode.py up to MAX_T tokens, chunked.py beyond; both are plain MLX, so they run
and differentiate on every device. `FAST` uses MLX core's own
`mx.fast.gated_delta_update` (one Metal kernel, chunked on Metal for long T).
PLAIN holds until the load-time step (mlx_qwen3next/checkpoints/device.py) sets another: on
a GPU, `calibrate` times both on the model's head shapes and keeps the faster per
length class; on the CPU, the CPU package's own policy.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import mlx.core as mx

from .chunked import gated_delta_chunked
from .decode import MAX_T, gated_delta_decode


def fast_gated_delta(q, k, v, g, beta, state=None, lengths=None):
    """mx.fast.gated_delta_update with our contract (log-space g, valid-token lengths)."""
    mask = None
    if lengths is not None:
        T = q.shape[1]
        mask = mx.arange(T)[None, :] >= (T - mx.array(lengths).reshape(-1, 1))
    if state is not None:
        state = state.astype(mx.float32)
    y, state = mx.fast.gated_delta_update(q, k, v, mx.exp(g.astype(mx.float32)), beta,
                                          state, mask)
    return y.astype(q.dtype), state


@dataclass(frozen=True)
class Policy:
    few: Callable  # T <= MAX_T
    many: Callable  # T > MAX_T
    name: str = ""

    def pick(self, T: int) -> Callable:
        return self.few if T <= MAX_T else self.many


PLAIN = Policy(gated_delta_decode, gated_delta_chunked, "ops")
FAST = Policy(fast_gated_delta, fast_gated_delta, "mx.fast")
_policy = PLAIN


def gated_delta(q, k, v, g, beta, state=None, lengths=None):
    """Gated delta rule over T tokens.

    q, k [B,T,Hk,Dk] (L2-normalised, q scaled); v [B,T,Hv,Dv]; g [B,T,Hv]
    log-space decay; beta [B,T,Hv]; state [B,Hv,Dv,Dk] float32 or None;
    lengths [B] valid tokens per left-padded row or None.
    Returns y [B,T,Hv,Dv] in q's dtype and the new float32 state.
    """
    return _policy.pick(q.shape[1])(q, k, v, g, beta, state, lengths)


def policy() -> Policy:
    return _policy


def set_policy(p: Policy) -> Policy:
    """Use `p` from now on; returns the policy it replaces."""
    global _policy
    old, _policy = _policy, p
    return old


@contextmanager
def using(p: Policy):
    old = set_policy(p)
    try:
        yield p
    finally:
        set_policy(old)


def calibrate(Hk: int, Hv: int, Dk: int, Dv: int, dtype=mx.bfloat16,
              candidates=(PLAIN, FAST), lengths=(1, 512), repeats: int = 3) -> Policy:
    """The policy whose paths are the fastest of `candidates` on these head shapes,
    timed at one few-token and one long length (a candidate that raises loses)."""
    picks = []
    for T in lengths:
        x = _inputs(T, Hk, Hv, Dk, Dv, dtype)
        best = min(candidates, key=lambda c: _seconds(c.pick(T), x, repeats))
        picks.append(best.pick(T))
    return Policy(picks[0], picks[1], "measured")


def _inputs(T, Hk, Hv, Dk, Dv, dtype):
    r = mx.random
    unit = lambda x: x / mx.linalg.norm(x, axis=-1, keepdims=True)
    x = (unit(r.normal((1, T, Hk, Dk))).astype(dtype), unit(r.normal((1, T, Hk, Dk))).astype(dtype),
         r.normal((1, T, Hv, Dv)).astype(dtype), -mx.abs(r.normal((1, T, Hv))) * 0.1,
         mx.sigmoid(r.normal((1, T, Hv))), r.normal((1, Hv, Dv, Dk)) * 0.1)
    mx.eval(x)
    return x


def _seconds(fn, x, repeats) -> float:
    try:
        mx.eval(fn(*x))  # warm-up (and compile)
        t = time.perf_counter()
        for _ in range(repeats):
            mx.eval(fn(*x))
        return (time.perf_counter() - t) / repeats
    except Exception:
        return float("inf")
