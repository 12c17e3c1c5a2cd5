"""The sparse MoE block: fp32 softmax router, top-k experts, a gated shared expert."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..config import ModelConfig
from .activations import sigmoid, silu
from .linear import Linear
from .switch import SwitchGLU


class MLP(nn.Module):
    """A dense SwiGLU MLP (the shared expert, or a layer in mlp_only_layers)."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = Linear(hidden, intermediate, bias=False)
        self.up_proj = Linear(hidden, intermediate, bias=False)
        self.down_proj = Linear(intermediate, hidden, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(silu(self.gate_proj(x)) * self.up_proj(x))


class SparseMoeBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.top_k = cfg.num_experts_per_tok
        self.norm_topk_prob = cfg.norm_topk_prob
        H = cfg.hidden_size
        self.gate = Linear(H, cfg.num_experts, bias=False)  # the router
        self.switch_mlp = SwitchGLU(H, cfg.moe_intermediate_size, cfg.num_experts)
        self.shared_expert = MLP(H, cfg.shared_expert_intermediate_size)
        self.shared_expert_gate = Linear(H, 1, bias=False)

    def route(self, x: mx.array):
        """Top-k expert indices and their weights (softmax over all experts, in fp32)."""
        probs = mx.softmax(self.gate(x).astype(mx.float32), axis=-1)
        k = self.top_k
        inds = mx.argpartition(-probs, kth=k - 1, axis=-1)[..., :k]
        scores = mx.take_along_axis(probs, inds, axis=-1)
        if self.norm_topk_prob:
            scores = scores / scores.sum(axis=-1, keepdims=True)
        return inds, scores

    def __call__(self, x: mx.array) -> mx.array:
        inds, scores = self.route(x)
        y = self.switch_mlp(x, inds)
        # the weighted sum over the k experts as one [1, k] @ [k, H] product per token:
        # 2x faster than multiply-then-sum on the CPU at 2048 tokens
        y = (scores[..., None, :].astype(y.dtype) @ y).squeeze(-2)
        shared = sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)
        return y + shared
