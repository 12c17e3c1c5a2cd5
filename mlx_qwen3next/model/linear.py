"""nn.Linear, with decode-sized products on the CPU read in row blocks.

A decode or verify step multiplies a few rows of activations by each weight,
so it is bound by how fast the weight streams from memory. On the CPU, one
OpenBLAS product over a whole large weight streams it markedly slower than the
same product split into blocks of a few MB (measured on this project's 2-core
x86 VM, lm_head 151936 x 2048 float32, one row: 4.8 GB/s whole, 6.5 GB/s in
1024-row blocks, 8.6 GB/s as one batched product over them; 2-5 rows gain about
as much). So there, the weight's rows are viewed as [blocks, rows, in] and
multiplied in one batched matmul, which MLX's CPU backend runs as one BLAS call
per block; the rows past the last whole block take one more product. For 2 or 3
rows (a verify step), each block is multiplied on its own as block @ x.T, which
OpenBLAS runs about as fast as one row (lm_head: 2 rows 152 ms, 3 rows 177 ms,
against 194 / 235 ms batched and 160 ms for one row); from 4 rows the batched
product is faster again (259 ms against 377 ms). Large row counts (prefill)
are compute-bound and keep the single product, as do other devices and dtypes
(MLX's CPU BLAS path is float32 only). A weight under two blocks but of at least
NARROW_BYTES is multiplied whole as (weight @ x.T).T, which streams it faster than
x @ weight.T at every decode row count (a cold [512, 2048] weight: 8.6 -> 9.1 GB/s at
one row, 5.2 -> 7.6 GB/s at four). bench/RESULTS.md, "Decode products".
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

BLOCK_BYTES = 8 << 20  # one block of weight rows; 4-8 MB measured best, 16 MB already slower
MAX_ROWS = 8  # activations rows up to which a product is treated as weight-bound
NARROW_ROWS = (2, 3)  # rows for which block @ x.T beats x @ block.T (see above)
NARROW_BYTES = 1 << 20  # smaller weights sit in cache: the orientation makes no difference


def streams_weight(rows: int, x: mx.array, weight: mx.array) -> bool:
    """Whether a product of `rows` activation rows by `weight` is one of the CPU's
    weight-bound float32 products, which this file (and SwitchLinear) lay out for speed."""
    return (mx.default_device() == mx.cpu and x.dtype == weight.dtype == mx.float32
            and 0 < rows <= MAX_ROWS)


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
    """x @ weight.T, laid out for the CPU's decode products where that is faster."""
    product = cpu_layout(x, weight)
    return x @ weight.T if product is None else product(x, weight)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same quantization) with the CPU decode layouts."""

    def __call__(self, x: mx.array) -> mx.array:
        product = cpu_layout(x, self.weight)
        if product is None:
            return super().__call__(x)
        y = product(x, self.weight)
        return y + self.bias if "bias" in self else y
