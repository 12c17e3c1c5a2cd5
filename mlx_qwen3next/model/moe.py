"""The sparse MoE block: fp32 softmax router, top-k experts, a gated shared expert."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..config import ModelConfig
from .fused import products
from .switch import SwitchGLU


class MLP(nn.Module):
    """A dense SwiGLU MLP (the shared expert, or a layer in mlp_only_layers)."""

    FUSED = ("gate_proj", "up_proj")  # see fused.py

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)
        self.act = nn.SiLU()

    def __call__(self, x: mx.array) -> mx.array:
        gate, up = products(self, lambda proj: proj(x))
        return self.down_proj(self.act(gate) * up)


class SparseMoeBlock(nn.Module):
    FUSED = ("gate", "shared_expert_gate")  # see fused.py

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.top_k = cfg.num_experts_per_tok
        self.norm_topk_prob = cfg.norm_topk_prob
        H = cfg.hidden_size
        self.gate = nn.Linear(H, cfg.num_experts, bias=False)  # the router
        self.switch_mlp = SwitchGLU(H, cfg.moe_intermediate_size, cfg.num_experts)
        self.shared_expert = MLP(H, cfg.shared_expert_intermediate_size)
        self.shared_expert_gate = nn.Linear(H, 1, bias=False)

    def route(self, logits: mx.array):
        """Top-k expert indices and their weights from the router's logits (softmax over
        all experts, in fp32). The indices are a choice, not a function to differentiate:
        gradients reach the router through the weights only."""
        logits = logits.astype(mx.float32)
        E, k = logits.shape[-1], self.top_k
        inds = mx.stop_gradient(mx.argpartition(logits, kth=E - k, axis=-1)[..., E - k:])
        if self.norm_topk_prob:  # softmax over all, renormalised over the top k
            return inds, mx.softmax(mx.take_along_axis(logits, inds, axis=-1), axis=-1)
        return inds, mx.take_along_axis(mx.softmax(logits, axis=-1), inds, axis=-1)

    def __call__(self, x: mx.array) -> mx.array:
        logits, shared_gate = products(self, lambda proj: proj(x))
        inds, scores = self.route(logits)
        y = self.switch_mlp(x, inds)
        y = (scores[..., None, :].astype(y.dtype) @ y).squeeze(-2)  # weighted sum over k
        return y + mx.sigmoid(shared_gate) * self.shared_expert(x)
