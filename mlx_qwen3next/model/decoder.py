"""One decoder layer (DeltaNet or gated attention, then MoE) and the per-call context it needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from ..config import ModelConfig
from .attention import Attention, attention_mask
from .deltanet import GatedDeltaNet
from .moe import MLP, SparseMoeBlock
from .norms import RMSNorm


@dataclass
class StepContext:
    """What every layer of one forward call shares: masks and positions."""

    attn_mask: object = None  # None, "causal", or a mask over the keys the cache returns
    positions: object = 0  # RoPE offset: int, or an array (one per row when left-padded)
    pad_mask: Optional[mx.array] = None  # [B, L], True on real tokens
    lengths: Optional[mx.array] = None  # [B], real tokens in this call


def step_context(cache, L: int, dtype) -> StepContext:
    """Masks and positions for L new tokens appended to `cache` (a HybridCache or None)."""
    if cache is None:
        return StepContext("causal" if L > 1 else None, 0)
    offset, left_pad = cache.offset, cache.left_pad
    ctx = StepContext(attention_mask(L, offset, left_pad, dtype), cache.positions())
    if left_pad is not None and L > 0:
        pos = mx.arange(offset, offset + L)[None, :]
        ctx.pad_mask = pos >= left_pad[:, None]
        ctx.lengths = mx.clip(offset + L - left_pad, 0, L)
    return ctx


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, linear: bool, moe: bool):
        super().__init__()
        self.is_linear = linear
        if linear:
            self.linear_attn = GatedDeltaNet(cfg)
        else:
            self.self_attn = Attention(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        if moe:
            self.mlp = SparseMoeBlock(cfg)
        else:
            self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size)

    def __call__(self, x: mx.array, cache, ctx: StepContext) -> mx.array:
        h = self.input_layernorm(x)
        if self.is_linear:
            h = self.linear_attn(h, cache, ctx.pad_mask, ctx.lengths)
        else:
            h = self.self_attn(h, ctx.attn_mask, cache, ctx.positions)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x))
