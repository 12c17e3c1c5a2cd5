"""The routed experts on the CPU: float32 gathers, weight-on-the-left decode products,
and one dense product per expert for prefill.

MLX's CPU gather_mm is float32-only and runs one matrix-vector product per
(token, expert) pair, re-reading the expert's weights for each. So here:
- every gather is computed in float32 (bf16 checkpoints run);
- for the few rows of a decode step each pair is (W_e @ x.T).T, which OpenBLAS
  streams faster with the weight as the left, untransposed operand;
- a prefill groups the pairs by expert and multiplies each expert once over
  all its rows (one host sync per call for the per-expert row counts; so not under
  mx.compile, where a large batch's decode step takes the gathers).
Figures: bench/RESULTS.md, "Decode products" and "End-to-end".
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ..kernels._prep import eval_if_eager
from ..model.fused import products, projections
from ..model.switch import SwitchGLU, SwitchLinear, batch_rows
from .products import streams_weight


class CpuSwitchLinear(SwitchLinear):
    def __call__(self, x, indices, sorted_indices=False, rows=None):
        x, w = x.astype(mx.float32), self.weight.astype(mx.float32)
        rows = batch_rows(x, indices) if rows is None else rows
        if not streams_weight(x.shape[-2], x, w):
            return mx.gather_mm(x, w.swapaxes(-1, -2), lhs_indices=rows, rhs_indices=indices,
                                sorted_indices=sorted_indices).astype(self.weight.dtype)
        rows = mx.broadcast_to(rows, mx.broadcast_shapes(rows.shape, indices.shape))
        out = mx.gather_mm(w, x.swapaxes(-1, -2), lhs_indices=indices, rhs_indices=rows)
        return out.swapaxes(-1, -2).astype(self.weight.dtype)

    def expert(self, x, e: int):
        """x [n, in] through expert e alone: one dense float32 product."""
        return (x.astype(mx.float32) @ self.weight[e].astype(mx.float32).T).astype(x.dtype)


class GroupedSwitchGLU(SwitchGLU):
    """SwitchGLU with one dense product per expert once the pairs are many (prefill)."""

    def __call__(self, x: mx.array, indices: mx.array) -> mx.array:
        if indices.size < self.SORT_FROM or not all(
                isinstance(p, CpuSwitchLinear) for p in projections(self) + [self.down_proj]
        ) or not eval_if_eager(indices):  # under mx.compile (a large batch's decode step)
            return super().__call__(x, indices)
        k = indices.shape[-1]
        flat = indices.flatten()
        order = mx.argsort(flat)
        counts = np.bincount(np.array(flat), minlength=self.down_proj.weight.shape[0])
        xs = x.reshape(-1, x.shape[-1])[order // k]
        outs, start = [], 0
        for e in np.flatnonzero(counts):
            xe = xs[start : start + int(counts[e])]
            start += int(counts[e])
            gate, up = products(self, lambda proj: proj.expert(xe, int(e)))
            h = self.act(gate) * up
            outs.append(self.down_proj.expert(h, int(e)))
        y = mx.concatenate(outs, axis=0)[mx.argsort(order)]
        return y.reshape(*indices.shape, -1)
