"""Training-only fast exp / sigmoid for MLX's CPU, with their exact-form gradients.

MLX's CPU exp and sigmoid cost ~25 ns an element (the package's
mlx_qwen3next/cpu/activations.py uses a polynomial exp at inference for that reason;
its bit trick is not differentiable). Training the tiny model runs tens of millions of
them a step (every SiLU, gate, decay and the cross-entropy's softmax over the
vocabulary), so while training, `patched()` replaces mx.exp and mx.sigmoid by
custom functions around that same polynomial exp (~2e-7 relative), with vjps
exp' = exp and sigmoid' = s (1 - s). Only float32 arrays take
the fast path. The originals come back on leaving the context, before the model is
saved or evaluated. `cross_entropy` is a masked-loss cross-entropy on the same exp.
"""

from __future__ import annotations

from contextlib import contextmanager

import mlx.core as mx

from mlx_qwen3next.cpu.activations import poly_exp

_exp, _sigmoid = mx.exp, mx.sigmoid  # MLX's own
_poly_exp = mx.compile(poly_exp)


@mx.custom_function
def _fast_exp(x):
    return _poly_exp(x)


@_fast_exp.vjp
def _fast_exp_vjp(primals, cotangent, output):
    return cotangent * output


@mx.compile
def _poly_sigmoid(x):
    return 1.0 / (1.0 + _poly_exp(-x))


@mx.custom_function
def _fast_sigmoid(x):
    return _poly_sigmoid(x)


@_fast_sigmoid.vjp
def _fast_sigmoid_vjp(primals, cotangent, output):
    return cotangent * output * (1.0 - output)


def exp(x, *args, **kwargs):
    if isinstance(x, mx.array) and x.dtype == mx.float32 and not args and not kwargs:
        return _fast_exp(x)
    return _exp(x, *args, **kwargs)


def sigmoid(x, *args, **kwargs):
    if isinstance(x, mx.array) and x.dtype == mx.float32 and not args and not kwargs:
        return _fast_sigmoid(x)
    return _sigmoid(x, *args, **kwargs)


@contextmanager
def patched():
    """mx.exp and mx.sigmoid are the fast ones inside the block."""
    mx.exp, mx.sigmoid = exp, sigmoid
    try:
        yield
    finally:
        mx.exp, mx.sigmoid = _exp, _sigmoid


@contextmanager
def unpatched():
    """MLX's own mx.exp and mx.sigmoid inside the block (evaluation while training:
    the polynomial's bit cast cannot be traced by nn.silu's shapeless compile)."""
    saved = mx.exp, mx.sigmoid
    mx.exp, mx.sigmoid = _exp, _sigmoid
    try:
        yield
    finally:
        mx.exp, mx.sigmoid = saved


def cross_entropy(logits: mx.array, targets: mx.array) -> mx.array:
    """Per-position cross-entropy, logsumexp through the fast exp (float32 logits)."""
    logits = logits.astype(mx.float32)
    m = mx.stop_gradient(logits.max(axis=-1, keepdims=True))
    lse = mx.log(exp(logits - m).sum(axis=-1)) + m[..., 0]
    return lse - mx.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
