"""The lm_head's one-row products through BLAS's matrix-vector product.

MLX's CPU matmul calls sgemm for every float32 product, and OpenBLAS's sgemm
packs the weight even for one row of activations, so it streams the weight at
well under the rate of sgemv (bench/RESULTS.md, "The lm_head through sgemv").
The lm_head is the one product of a decode step that runs outside the compiled
layer steps, so it can evaluate its input and call sgemv on the arrays' own
memory. Everywhere else (under mx.compile, several rows, other dtypes or another
BLAS) `gemv` returns None and the caller keeps its MLX product. Not for
training: the result is a new array, cut off from the gradient.
"""

from __future__ import annotations

import ctypes
from typing import Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..kernels._prep import eval_if_eager
from .blas import openblas
from .products import BlockedLinear, matmul_t

_ROW_MAJOR, _NO_TRANS = 101, 111
_sgemv = None


def _blas_sgemv():
    global _sgemv
    lib = openblas()
    if _sgemv is None and lib is not None:
        fn = lib.cblas_sgemv
        i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
        fn.argtypes = [i, i, i, i, f, p, i, p, i, f, p, i]
        fn.restype = None
        _sgemv = fn
    return _sgemv


def gemv(x: mx.array, weight: mx.array) -> Optional[mx.array]:
    """x [..., in] (one row) @ weight [out, in].T through cblas_sgemv, or None where
    that does not apply."""
    sgemv = _blas_sgemv()
    if (sgemv is None or x.dtype != mx.float32 or weight.dtype != mx.float32
            or weight.ndim != 2 or x.size != x.shape[-1] or x.size != weight.shape[1]):
        return None
    if not eval_if_eager(x, weight):
        return None
    w = np.asarray(weight)  # a view of MLX's memory, not a copy
    if not w.flags.c_contiguous:
        return None
    v = np.ascontiguousarray(np.asarray(x).reshape(-1))
    y = np.empty(w.shape[0], np.float32)
    sgemv(_ROW_MAJOR, _NO_TRANS, w.shape[0], w.shape[1], 1.0, w.ctypes.data, w.shape[1],
          v.ctypes.data, 1, 0.0, y.ctypes.data, 1)
    return mx.array(y).reshape(*x.shape[:-1], w.shape[0])


def head_product(x: mx.array, weight: mx.array) -> mx.array:
    """x @ weight.T for an lm_head: sgemv for one row, else the decode layouts."""
    y = gemv(x, weight)
    return matmul_t(x, weight) if y is None else y


class HeadLinear(BlockedLinear):
    """The lm_head, through `head_product`."""

    def __call__(self, x: mx.array) -> mx.array:
        return super().__call__(x) if "bias" in self else head_product(x, self.weight)


class HeadEmbedding(nn.Embedding):
    """An embedding whose as_linear (a tied lm_head) goes through `head_product`."""

    def as_linear(self, x: mx.array) -> mx.array:
        return head_product(x, self.weight)
