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
        dtype = mx.result_type(x, *([self.bias] if "bias" in self else []))
        if self.mode == "affine":  # other modes' scales are uint8 codes
            dtype = mx.result_type(dtype, self.scales)
        if x.size // x.shape[-1] <= QUANTIZED_ROWS:
            return super().__call__(x.astype(mx.float32)).astype(dtype)
        y = x.astype(mx.float32) @ dequantized(self).T
        if "bias" in self:
            y = y + self.bias
        return y.astype(dtype)


class CpuQuantizedSwitchLinear(QuantizedSwitchLinear):
    def __call__(self, x, indices, sorted_indices=False, rows=None):
        y = super().__call__(x.astype(mx.float32), indices, sorted_indices, rows)
        return y.astype(mx.result_type(x, self.scales) if self.mode == "affine" else x.dtype)


def dequantized(m) -> mx.array:
    """m's weight in float32, exactly: an affine one from float32 scales and biases
    (dequantizing with bf16 ones rounds every weight to bf16); other modes' scales are
    codes, kept as they are."""
    f32 = (lambda a: None if a is None else a.astype(mx.float32)) if m.mode == "affine" \
        else (lambda a: a)
    w = mx.dequantize(m.weight, f32(m.scales), f32(m.get("biases")), m.group_size, m.bits,
                      mode=m.mode)
    return w.astype(mx.float32)
