"""Stacked experts: one [E, out, in] weight per projection, applied with a gather matmul.

`SwitchLinear.to_quantized` lets `nn.quantize` turn it into `QuantizedSwitchLinear`
(weight, scales, biases in mlx-lm's layout), so converted checkpoints load here
and in mlx-lm alike.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from . import constants
from .fused import products


class SwitchLinear(nn.Module):
    def __init__(self, input_dims: int, output_dims: int, num_experts: int):
        super().__init__()
        scale = input_dims**-0.5
        self.weight = mx.random.uniform(-scale, scale, (num_experts, output_dims, input_dims))

    def __call__(self, x, indices, sorted_indices=False, rows=None):
        """x [..., M, in] -> [..., M, out] through expert indices[...] of each row;
        `rows`: x's batch entry for each index (default: the gather builds them)."""
        return mx.gather_mm(x, self.weight.swapaxes(-1, -2), lhs_indices=rows,
                            rhs_indices=indices, sorted_indices=sorted_indices)

    def to_quantized(self, group_size: int = 64, bits: int = 4, mode: str = "affine", **_):
        q = QuantizedSwitchLinear.__new__(QuantizedSwitchLinear)
        nn.Module.__init__(q)
        q.group_size, q.bits, q.mode = group_size, bits, mode
        q.weight, q.scales, *biases = mx.quantize(self.weight, group_size, bits, mode=mode)
        if biases:
            q.biases = biases[0]
        q.freeze()
        return q


class QuantizedSwitchLinear(nn.Module):
    def __init__(self, input_dims, output_dims, num_experts, group_size=64, bits=4,
                 mode="affine"):
        super().__init__()
        self.group_size, self.bits, self.mode = group_size, bits, mode
        w = mx.zeros((num_experts, output_dims, input_dims))
        self.weight, self.scales, *biases = mx.quantize(w, group_size, bits, mode=mode)
        if biases:
            self.biases = biases[0]
        self.freeze()

    def __call__(self, x, indices, sorted_indices=False, rows=None):
        return mx.gather_qmm(
            x, self.weight, self.scales, self.get("biases"), lhs_indices=rows,
            rhs_indices=indices,
            transpose=True, group_size=self.group_size, bits=self.bits, mode=self.mode,
            sorted_indices=sorted_indices,
        )


class SwitchGLU(nn.Module):
    """SwiGLU experts: down(silu(gate(x)) * up(x)) for each token's selected experts."""

    FUSED = ("gate_proj", "up_proj")  # see fused.py

    SORT_FROM = 64  # (token, expert) pairs from which they are sorted by expert

    def __init__(self, hidden: int, intermediate: int, num_experts: int):
        super().__init__()
        self.gate_proj = SwitchLinear(hidden, intermediate, num_experts)
        self.up_proj = SwitchLinear(hidden, intermediate, num_experts)
        self.down_proj = SwitchLinear(intermediate, hidden, num_experts)
        self.act = nn.SiLU()

    def __call__(self, x: mx.array, indices: mx.array) -> mx.array:
        """x [..., H], indices [..., k] -> [..., k, H]."""
        do_sort = indices.size >= self.SORT_FROM  # each expert's rows contiguous
        x = x.reshape(*x.shape[:-1], 1, 1, x.shape[-1])
        if do_sort:
            x, idx, inv_order = sort_by_expert(x, indices)
        else:
            idx = indices
        rows = batch_rows(x, idx)
        gate, up = products(self, lambda proj: proj(x, idx, do_sort, rows))
        h = self.act(gate) * up
        out = self.down_proj(h, idx, do_sort, batch_rows(h, idx))
        if do_sort:
            return out[inv_order].reshape(*indices.shape, -1)
        return out.squeeze(-2)


def batch_rows(x: mx.array, indices: mx.array) -> mx.array:
    """For each of the expert `indices`, the index of x's batch entry (all but its last two
    axes) that it reads: a gather's lhs_indices that leave x's rows where they are. A
    constant in the indices' shape: the gather would otherwise launch an arange, or
    broadcast the rows, of its own."""
    return constants.indices(tuple(x.shape[:-2]), like=tuple(indices.shape))


def sort_by_expert(x, indices):
    """x [..., 1, 1, H] repeated per pair and sorted by expert, the sorted experts,
    and the order that undoes the sort."""
    k = indices.shape[-1]
    flat = indices.flatten()
    order = mx.argsort(flat)
    inv_order = mx.argsort(order)
    x = x.reshape(-1, 1, x.shape[-1])[order // k]
    return x, flat[order], inv_order
