"""Decode-sized float32 products on the CPU, laid out so OpenBLAS streams the weight.

A decode or verify step multiplies a few rows of activations by each weight, so
it is bound by how fast the weight streams from memory. OpenBLAS streams a large
weight faster split into row blocks of a few MB, viewed as [blocks, rows, in]
and multiplied in one batched product (one BLAS call per block); for 2-3 rows,
each block is multiplied as block @ x.T. A weight under two blocks but of at
least NARROW_BYTES is multiplied whole as (weight @ x.T).T. Large row counts
(prefill) are compute-bound and keep the single product, as do other dtypes
(MLX's CPU BLAS path is float32 only). Figures: bench/RESULTS.md, "Decode products".
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

BLOCK_BYTES = 8 << 20  # one block of weight rows (4-8 MB measured best)
MAX_ROWS = 8  # activation rows up to which a product is treated as weight-bound
NARROW_ROWS = (2, 3)  # rows for which block @ x.T beats x @ block.T
NARROW_BYTES = 1 << 20  # smaller weights sit in cache: the orientation makes no difference


def streams_weight(rows: int, x: mx.array, weight: mx.array) -> bool:
    """Whether a product of `rows` activation rows by `weight` is one of the
    weight-bound float32 products that this file (and experts.py) lay out for speed."""
    return x.dtype == weight.dtype == mx.float32 and 0 < rows <= MAX_ROWS


def blocked(x: mx.array, weight: mx.array) -> bool:
    """Whether x @ weight.T takes the row-blocked path."""
    return (weight.ndim == 2 and streams_weight(_rows(x), x, weight)
            and weight.shape[0] >= 2 * block_rows(weight))


def narrow(x: mx.array, weight: mx.array) -> bool:
    """Whether x @ weight.T is computed as (weight @ x.T).T (a weight under two blocks)."""
    return (weight.ndim == 2 and streams_weight(_rows(x), x, weight)
            and weight.nbytes >= NARROW_BYTES and not blocked(x, weight))


def _rows(x: mx.array) -> int:
    return x.size // x.shape[-1] if x.shape[-1] else 0


def block_rows(weight: mx.array) -> int:
    """Rows of `weight` in one block: a power of two, about BLOCK_BYTES."""
    per_row = weight.shape[1] * weight.itemsize
    return 1 << max((BLOCK_BYTES // per_row).bit_length() - 1, 0)


def row_blocked_matmul(x: mx.array, weight: mx.array) -> mx.array:
    """x [..., in] @ weight [out, in].T, over row blocks of weight."""
    out, d = weight.shape
    n = block_rows(weight)
    whole = out // n * n
    xs = x.reshape(-1, d)
    if xs.shape[0] in NARROW_ROWS:
        # one product per block with the activations as its narrow right-hand side
        y = mx.concatenate([weight[i:i + n] @ xs.T for i in range(0, whole, n)], axis=0).T
    else:
        blocks = weight[:whole].reshape(out // n, n, d).swapaxes(1, 2)  # views: no copy
        y = (xs @ blocks).swapaxes(0, 1).reshape(xs.shape[0], whole)  # [rows, whole]
    if whole < out:
        y = mx.concatenate([y, xs @ weight[whole:].T], axis=1)
    return y.reshape(*x.shape[:-1], out)


def narrow_matmul(x: mx.array, weight: mx.array) -> mx.array:
    """x [..., in] @ weight [out, in].T as (weight @ x.T).T."""
    xs = x.reshape(-1, x.shape[-1])
    return (weight @ xs.T).T.reshape(*x.shape[:-1], weight.shape[0])


def cpu_layout(x: mx.array, weight: mx.array):
    """The CPU decode layout for x @ weight.T (a function of x, weight), or None for the
    plain product."""
    if blocked(x, weight):
        return row_blocked_matmul
    return narrow_matmul if narrow(x, weight) else None


def matmul_t(x: mx.array, weight: mx.array) -> mx.array:
    """x @ weight.T in the decode layout where one applies."""
    product = cpu_layout(x, weight)
    return x @ weight.T if product is None else product(x, weight)


class BlockedLinear(nn.Linear):
    """nn.Linear (same parameters, same quantization) with the decode layouts."""

    def __call__(self, x: mx.array) -> mx.array:
        product = cpu_layout(x, self.weight)
        if product is None:
            return super().__call__(x)
        y = product(x, self.weight)
        return y + self.bias if "bias" in self else y
