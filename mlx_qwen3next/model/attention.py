"""Gated full attention: GQA, q/k RMSNorm before partial RoPE, sigmoid output gate."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..config import ModelConfig
from . import constants
from .fused import products
from .norms import RMSNorm
from .rope import PartialRoPE


class Attention(nn.Module):
    FUSED = ("q_proj", "k_proj", "v_proj")  # see fused.py

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = cfg.num_key_value_heads
        self.head_dim = hd = cfg.head_dim
        self.scale = hd**-0.5
        bias = cfg.attention_bias
        # per head: head_dim query features, then head_dim gate features
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * hd * 2, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv_heads * hd, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv_heads * hd, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * hd, cfg.hidden_size, bias=bias)
        self.q_norm = RMSNorm(hd, eps=cfg.rms_norm_eps)
        self.k_norm = RMSNorm(hd, eps=cfg.rms_norm_eps)
        self.rope = PartialRoPE(
            cfg.rotary_dim, cfg.rope_theta, cfg.rope_scaling, cfg.max_position_embeddings
        )

    def __call__(self, x: mx.array, mask, cache=None, positions=0) -> mx.array:
        """`mask`: None, "causal" or a mask over the keys the cache returns."""
        B, L, _ = x.shape
        q, k, v = products(self, lambda proj: proj(x))
        q, gate = mx.split(q.reshape(B, L, self.n_heads, 2 * self.head_dim), 2, -1)
        k = k.reshape(B, L, self.n_kv_heads, self.head_dim)
        v = v.reshape(B, L, self.n_kv_heads, self.head_dim)
        q = self.rope(self.q_norm(q).transpose(0, 2, 1, 3), positions)
        k = self.rope(self.k_norm(k).transpose(0, 2, 1, 3), positions)
        v = v.transpose(0, 2, 1, 3)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        out = self.attend(q, k, v, mask).transpose(0, 2, 1, 3).reshape(B, L, -1)
        return self.o_proj(out * mx.sigmoid(gate.reshape(B, L, -1)))

    def attend(self, q, k, v, mask) -> mx.array:
        """Scaled dot-product attention of q [B, heads, L, D] over the keys and values."""
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)


def attention_mask(L: int, offset: int, left_pad: mx.array | None, dtype):
    """The mask for L new queries after `offset` cached positions.

    "causal" when no row is padded (the fused kernel builds it); otherwise an
    additive mask that also hides each row's left padding.
    """
    if left_pad is None:
        return "causal" if L > 1 else None
    q_pos = mx.arange(offset, offset + L)[:, None]
    k_pos = mx.arange(offset + L)[None, :]
    allowed = (k_pos <= q_pos)[None] & (k_pos[None] >= left_pad[:, None, None])
    allowed = allowed | (k_pos == q_pos)[None]  # padding queries see themselves: no NaN rows
    return mx.where(allowed, 0.0, -mx.inf).astype(dtype)[:, None]


def buffer_slots(capacity: int) -> mx.array:
    """Slot numbers of a KV buffer [1, capacity] (a constant)."""
    return constants.indices((1, capacity), np.int32)


def buffer_mask(L: int, offset: mx.array, capacity: int) -> mx.array:
    """Query t (at position offset + t) sees buffer slots <= offset + t: [L, capacity]."""
    return buffer_slots(capacity) <= offset + constants.indices((L, 1), np.int32)
