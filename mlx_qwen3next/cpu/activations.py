"""SiLU from a polynomial exp, for float inputs on the CPU.

MLX's CPU exp and sigmoid cost 20-25 ns an element, and a prefill runs tens of
millions of SiLUs per layer (the conv's, the gated norm's, every expert's).
Here exp comes from a compiled polynomial instead: n = round(x / ln 2),
r = x - n ln 2 (two-part ln 2), a degree-7 Taylor polynomial for e^r on
|r| <= ln 2 / 2, and 2^n put into the exponent bits. Within ~2e-7 relative of
float64 (mx.sigmoid itself is within ~4e-6). Not differentiable (the bit
trick is a View): training keeps the plain nn.SiLU.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4  # ln 2 = HI + LO, HI exact in few bits
_TAYLOR = (1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 1 / 2, 1.0, 1.0)  # e^r, high to low
_FAST_DTYPES = (mx.float32, mx.bfloat16, mx.float16)


def poly_exp(x: mx.array) -> mx.array:
    """e^x for float32 x, clamped to [-87, 88.5]: ~1e-38 at the bottom, inf above."""
    x = mx.clip(x, -87.0, 88.5)
    n = mx.floor(x * 1.4426950408889634 + 0.5)
    r = x - n * _LN2_HI - n * _LN2_LO
    p = _TAYLOR[0]
    for c in _TAYLOR[1:]:
        p = p * r + c
    return p * ((n.astype(mx.int32) + 127) << 23).view(mx.float32)


@mx.compile
def _poly_silu(x):
    xf = x.astype(mx.float32)
    return (xf / (1.0 + poly_exp(-xf))).astype(x.dtype)


def silu(x: mx.array) -> mx.array:
    return _poly_silu(x) if x.dtype in _FAST_DTYPES else nn.silu(x)


class PolySiLU(nn.Module):
    """nn.SiLU through the polynomial exp (float16/bfloat16/float32; others unchanged)."""

    def __call__(self, x: mx.array) -> mx.array:
        return silu(x)
