"""Quantized products on the CPU, in float32.

MLX's CPU quantized matmul is several times slower on bf16 activations than on float32
ones, and far less exact (5% relative error where the float32 product has 1e-6); for
more than a few rows it is slower again than dequantizing the weight and letting
OpenBLAS multiply it. So here a quantized product takes float32 activations, one of more
than QUANTIZED_ROWS rows (a prefill) multiplies the dequantized float32 weight, and the
result comes back in the dtype the plain module gives.
Figures: bench/RESULTS.md, "Quantized products on the CPU".
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..model.switch import QuantizedSwitchLinear

QUANTIZED_ROWS = 4  # rows up to which the quantized product beats dequantize + OpenBLAS


class CpuQuantizedLinear(nn.QuantizedLinear):
    def __call__(self, x: mx.array) -> mx.array:
        dtype = out_dtype(self, x)
        if x.size // x.shape[-1] <= QUANTIZED_ROWS:
            return super().__call__(x.astype(mx.float32)).astype(dtype)
        y = x.astype(mx.float32) @ dequantized(self).T
        if "bias" in self:
            y = y + self.bias
        return y.astype(dtype)


class CpuQuantizedSwitchLinear(QuantizedSwitchLinear):
    def __call__(self, x, indices, sorted_indices=False, rows=None):
        y = super().__call__(x.astype(mx.float32), indices, sorted_indices, rows)
        return y.astype(out_dtype(self, x))


def out_dtype(m, x: mx.array):
    """The dtype the plain module gives for x: affine scales (and a bias) take part in
    the type promotion; other modes' scales are uint8 codes."""
    dtype = mx.result_type(x, m.scales) if m.mode == "affine" else x.dtype
    return mx.result_type(dtype, m.bias) if "bias" in m else dtype


def dequantized(m) -> mx.array:
    """m's weight in float32, exactly: an affine one from float32 scales and biases
    (dequantizing with bf16 ones rounds every weight to bf16); other modes' scales are
    codes, kept as they are."""
    scales, biases = m.scales, m.get("biases")
    if m.mode == "affine":
        scales = scales.astype(mx.float32)
        biases = None if biases is None else biases.astype(mx.float32)
    w = mx.dequantize(m.weight, scales, biases, m.group_size, m.bits, mode=m.mode)
    return w.astype(mx.float32)
