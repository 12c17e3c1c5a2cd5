"""Small constant arrays built from data and kept per shape.

A compiled step holds such an array as a constant; mx.arange or mx.full in its place
would be a kernel launch on every call.
"""

from __future__ import annotations

import math
from functools import lru_cache

import mlx.core as mx
import numpy as np


@lru_cache(maxsize=16)  # few shapes are live at once; a KV buffer's grow with the context
def indices(shape: tuple, dtype=np.uint32, like: tuple | None = None) -> mx.array:
    """0, 1, 2, ... in row-major order, in `shape` (broadcast to `like`, if given)."""
    out = np.arange(math.prod(shape), dtype=dtype).reshape(shape)
    return mx.array(out if like is None else np.broadcast_to(out, like))


@lru_cache(maxsize=128)
def filled(n: int, value: float, dtype) -> mx.array:
    """[value] * n in `dtype`."""
    return mx.array([value] * n, dtype=dtype)
