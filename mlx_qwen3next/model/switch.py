"""Stacked experts: one [E, out, in] weight per projection, applied with a gather matmul.

`SwitchLinear.to_quantized` lets `nn.quantize` turn it into `QuantizedSwitchLinear`
(weight, scales, biases in mlx-lm's layout), so converted checkpoints load here
and in mlx-lm alike.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .activations import silu
from .linear import streams_weight


class SwitchLinear(nn.Module):
    def __init__(self, input_dims: int, output_dims: int, num_experts: int):
        super().__init__()
        scale = input_dims**-0.5
        self.weight = mx.random.uniform(-scale, scale, (num_experts, output_dims, input_dims))

    def __call__(self, x, indices, sorted_indices=False, lhs_indices=None):
        """x [..., M, in] -> [..., M, out] through expert indices[...] of each row;
        lhs_indices picks x's batch entry per pair (default: x's batch broadcast)."""
        w = self.weight
        if mx.default_device() == mx.cpu:
            return _cpu_gather_mm(x, w, indices, lhs_indices).astype(x.dtype)
        return mx.gather_mm(x, w.swapaxes(-1, -2), lhs_indices=lhs_indices, rhs_indices=indices,
                            sorted_indices=sorted_indices)

    def expert(self, x, e: int):
        """x [n, in] through expert e alone: one dense matmul."""
        w = self.weight[e]
        if w.dtype != mx.float32 and mx.default_device() == mx.cpu:
            return (x.astype(mx.float32) @ w.astype(mx.float32).T).astype(x.dtype)
        return x @ w.T

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

    def __call__(self, x, indices, sorted_indices=False, lhs_indices=None):
        return mx.gather_qmm(
            x, self.weight, self.scales, self.get("biases"), lhs_indices=lhs_indices,
            rhs_indices=indices,
            transpose=True, group_size=self.group_size, bits=self.bits, mode=self.mode,
            sorted_indices=sorted_indices,
        )


    def expert(self, x, e: int):
        biases = self.get("biases")
        return mx.quantized_matmul(
            x, self.weight[e], self.scales[e], None if biases is None else biases[e],
            transpose=True, group_size=self.group_size, bits=self.bits, mode=self.mode,
        )


class SwitchGLU(nn.Module):
    """SwiGLU experts: down(silu(gate(x)) * up(x)) for each token's selected experts."""

    def __init__(self, hidden: int, intermediate: int, num_experts: int):
        super().__init__()
        self.gate_proj = SwitchLinear(hidden, intermediate, num_experts)
        self.up_proj = SwitchLinear(hidden, intermediate, num_experts)
        self.down_proj = SwitchLinear(intermediate, hidden, num_experts)

    def __call__(self, x: mx.array, indices: mx.array) -> mx.array:
        """x [..., H], indices [..., k] -> [..., k, H]."""
        # Many tokens: sort (token, expert) pairs by expert so each expert's rows are contiguous.
        do_sort = indices.size >= 64
        if do_sort and mx.default_device() == mx.cpu:
            return self._grouped(x, indices)
        x = mx.expand_dims(x, (-2, -3))  # [..., 1, 1, H]
        if do_sort:
            x, idx, inv_order = _sort_by_expert(x, indices)
        else:
            idx = indices
        h = nn.silu(self.gate_proj(x, idx, do_sort)) * self.up_proj(x, idx, do_sort)
        out = self.down_proj(h, idx, do_sort)
        if do_sort:
            return out[inv_order].reshape(*indices.shape, -1)
        return out.squeeze(-2)

    def _grouped(self, x, indices):
        """One dense matmul per expert over all its rows (CPU prefill).

        MLX's CPU gather_mm runs one matrix-vector product per (token, expert)
        pair, re-reading the expert's weights for each; grouping reads them once
        per call. Measured at the real dims (64 experts, top-10, fp32, 2-core CPU):
        one MoE block 1.94 s -> 0.67 s at 128 tokens, 18.1 s -> 2.3 s at 512.
        The per-expert row counts need one host sync per call.
        """
        k = indices.shape[-1]
        flat = indices.flatten()
        order = mx.argsort(flat)
        counts = np.bincount(np.array(flat), minlength=self.gate_proj.weight.shape[0])
        xs = x.reshape(-1, x.shape[-1])[order // k]
        outs, start = [], 0
        for e in np.flatnonzero(counts):
            xe = xs[start : start + int(counts[e])]
            start += int(counts[e])
            h = silu(self.gate_proj.expert(xe, int(e))) * self.up_proj.expert(xe, int(e))
            outs.append(self.down_proj.expert(h, int(e)))
        y = mx.concatenate(outs, axis=0)[mx.argsort(order)]
        return y.reshape(*indices.shape, -1)


def _cpu_gather_mm(x, w, indices, lhs_indices=None):
    """gather_mm(x, w.T) in float32 (MLX's CPU gather_mm is float32-only). Each pair is
    one BLAS product; for the few rows of a decode step it is computed as (w_e @ x.T).T:
    with the expert's weight as the left, untransposed operand OpenBLAS streams it faster
    (a one-token MoE step at the real dims, 10 of 64 float32 experts, 2-core CPU:
    18.8 -> 16.6 ms; bench/RESULTS.md, "Decode products")."""
    x, w = x.astype(mx.float32), w.astype(mx.float32)
    if not streams_weight(x.shape[-2], x, w):
        return mx.gather_mm(x, w.swapaxes(-1, -2), lhs_indices=lhs_indices,
                            rhs_indices=indices)
    if lhs_indices is None:  # x's batch entries, broadcast against indices
        batch = x.shape[:-2]
        rows = mx.arange(int(np.prod(batch)), dtype=mx.uint32).reshape(batch)
        lhs_indices = mx.broadcast_to(rows, mx.broadcast_shapes(batch, indices.shape))
    out = mx.gather_mm(w, x.swapaxes(-1, -2), lhs_indices=indices, rhs_indices=lhs_indices)
    return out.swapaxes(-1, -2)


def _sort_by_expert(x, indices):
    k = indices.shape[-1]
    flat = indices.flatten()
    order = mx.argsort(flat)
    inv_order = mx.argsort(order)
    x = x.reshape(-1, 1, x.shape[-1])[order // k]
    return x, flat[order], inv_order
