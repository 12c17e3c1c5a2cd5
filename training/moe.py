"""The MoE blocks while training: routing recorded for the load-balancing loss, and the
routed experts optionally as dense products (same function and gradients)."""

from __future__ import annotations

from contextlib import contextmanager

import mlx.core as mx

from mlx_qwen3next.model import Model

_ROUTES: list | None = None  # (router probs, top-k indices) per MoE while a loss is traced


@contextmanager
def recorded_routes():
    """Inside the block every training MoE appends its routing to the yielded list."""
    global _ROUTES
    _ROUTES = []
    try:
        yield _ROUTES
    finally:
        _ROUTES = None


def training_moe(model: Model, dense: bool | None = None):
    """Swap every MoE block to a training-only subclass of the model's own block: it
    records its routing for the balance loss while a loss is traced, and (`dense`)
    computes the routed experts as three dense products over all experts, each
    expert's hidden units scaled by its top-k weight (0 for unselected experts).
    That is the same function, with the same gradients, as the gather_mm path:
    MLX's CPU gather_mm runs one matrix-vector product per (token, expert) pair,
    which is slower here than E / k times the flops in three large products.
    Parameters and `route` are unchanged. `dense=None` picks the dense products while
    they cost little (E * moe_intermediate <= 512, measured). Returns the function
    that undoes the swap."""
    moes = [m for _, m in model.named_modules() if hasattr(m, "route") and "gate" in m]
    base = type(moes[0])
    if dense is None:
        E, I, _ = moes[0].switch_mlp.gate_proj.weight.shape
        dense = E * I <= 512

    class TrainingMoe(base):
        def route(self, logits):
            inds, scores = super().route(logits)
            if _ROUTES is not None:
                _ROUTES.append((mx.softmax(logits.astype(mx.float32), axis=-1), inds))
            return inds, scores

        def __call__(self, x):
            if not dense:
                return super().__call__(x)
            inds, scores = self.route(self.gate(x))
            sw = self.switch_mlp
            E, I, H = sw.gate_proj.weight.shape
            S = ((inds[..., None] == mx.arange(E)).astype(x.dtype)
                 * scores[..., None].astype(x.dtype)).sum(axis=-2)  # [..., E]
            g = x @ sw.gate_proj.weight.reshape(E * I, H).T
            u = x @ sw.up_proj.weight.reshape(E * I, H).T
            h = (sw.act(g) * u).reshape(*x.shape[:-1], E, I) * S[..., None]
            down = sw.down_proj.weight.transpose(0, 2, 1).reshape(E * I, H)
            y = h.reshape(*x.shape[:-1], E * I) @ down
            return y + mx.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)

    for m in moes:
        m.__class__ = TrainingMoe

    def undo():
        for m in moes:
            m.__class__ = base

    return undo


def balance_loss(routes, valid: mx.array, num_experts: int) -> mx.array:
    """Switch-Transformer aux loss E * sum_e f_e P_e, averaged over MoE layers,
    over the non-padding tokens."""
    total = 0.0
    for probs, inds in routes:
        m = valid[:, : probs.shape[1]].astype(mx.float32)[..., None]
        n = m.sum()
        frac = ((inds[..., None] == mx.arange(num_experts)).astype(mx.float32)
                .mean(axis=-2) * m).sum(axis=(0, 1)) / n
        prob = (probs * m).sum(axis=(0, 1)) / n
        total = total + num_experts * (frac * prob).sum()
    return total / len(routes)
