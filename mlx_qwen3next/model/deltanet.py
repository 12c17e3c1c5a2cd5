"""The Gated DeltaNet mixer: projections, causal depthwise conv, the gated delta rule, gated norm."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..config import ModelConfig
from ..kernels import gated_delta
from .norms import GatedRMSNorm


class GatedDeltaNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.nk, self.nv = cfg.linear_num_key_heads, cfg.linear_num_value_heads
        self.dk, self.dv = cfg.linear_key_head_dim, cfg.linear_value_head_dim
        self.key_dim, self.value_dim = self.nk * self.dk, self.nv * self.dv
        self.conv_dim = 2 * self.key_dim + self.value_dim
        self.kernel = cfg.linear_conv_kernel_dim
        H = cfg.hidden_size
        self.in_proj_qkvz = nn.Linear(H, 2 * self.key_dim + 2 * self.value_dim, bias=False)
        self.in_proj_ba = nn.Linear(H, 2 * self.nv, bias=False)
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, self.kernel, groups=self.conv_dim, bias=False
        )
        self.dt_bias = mx.ones((self.nv,))
        self.A_log = mx.zeros((self.nv,))
        self.norm = GatedRMSNorm(self.dv, eps=cfg.rms_norm_eps)
        self.out_proj = nn.Linear(self.value_dim, H, bias=False)

    def split_projections(self, qkvz: mx.array, ba: mx.array):
        """Undo the per-key-head-group interleaving: [q | k | v.. | z..] and [b.. | a..]."""
        B, L, _ = qkvz.shape
        r = self.nv // self.nk
        qkvz = qkvz.reshape(B, L, self.nk, -1)
        q, k, v, z = mx.split(qkvz, [self.dk, 2 * self.dk, 2 * self.dk + r * self.dv], -1)
        b, a = mx.split(ba.reshape(B, L, self.nk, 2 * r), [r], -1)
        v = v.reshape(B, L, self.nv, self.dv)
        z = z.reshape(B, L, self.nv, self.dv)
        return q, k, v, z, b.reshape(B, L, self.nv), a.reshape(B, L, self.nv)

    def causal_conv(self, x: mx.array, cache, pad_mask):
        """Depthwise causal conv over [conv_state, x] (then SiLU); updates the conv state."""
        B, L, C = x.shape
        if pad_mask is not None:
            x = mx.where(pad_mask[..., None], x, 0)
        state = cache.conv_state if cache is not None else None
        if state is None:
            state = mx.zeros((B, self.kernel - 1, C), x.dtype)
        window = mx.concatenate([state.astype(x.dtype), x], axis=1)
        if cache is not None:
            cache.conv_state = window[:, -(self.kernel - 1) :, :]
            if cache.keep_steps:
                cache.step_window = window
        w = self.conv1d.weight[:, :, 0]  # [C, K]
        out = window[:, 0:L, :] * w[:, 0]
        for i in range(1, self.kernel):
            out = out + window[:, i : i + L, :] * w[:, i]
        return nn.silu(out)

    def __call__(self, x: mx.array, cache=None, pad_mask=None, lengths=None) -> mx.array:
        B, L, _ = x.shape
        q, k, v, z, b, a = self.split_projections(self.in_proj_qkvz(x), self.in_proj_ba(x))
        mixed = mx.concatenate(
            [q.reshape(B, L, -1), k.reshape(B, L, -1), v.reshape(B, L, -1)], axis=-1
        )
        mixed = self.causal_conv(mixed, cache, pad_mask)
        q, k, v = mx.split(mixed, [self.key_dim, 2 * self.key_dim], -1)
        q = l2_normalize(q.reshape(B, L, self.nk, self.dk)) * (self.dk**-0.5)
        k = l2_normalize(k.reshape(B, L, self.nk, self.dk))
        v = v.reshape(B, L, self.nv, self.dv)
        beta = mx.sigmoid(b.astype(mx.float32))
        g = -mx.exp(self.A_log.astype(mx.float32)) * nn.softplus(
            a.astype(mx.float32) + self.dt_bias.astype(mx.float32)
        )
        state = cache.recurrent_state if cache is not None else None
        q, k = q.astype(x.dtype), k.astype(x.dtype)
        if cache is not None and cache.keep_steps:
            y, state = self.stepwise(cache, q, k, v, g, beta, state)
        else:
            y, state = gated_delta(q, k, v, g, beta, state, lengths)
        if cache is not None:
            cache.recurrent_state = state
        y = self.norm(y, z)
        return self.out_proj(y.reshape(B, L, -1))


    @staticmethod
    def stepwise(cache, q, k, v, g, beta, state):
        """The recurrence one token at a time, keeping every state (a few verify tokens)."""
        ys, cache.step_states = [], [state]
        for t in range(q.shape[1]):
            s = slice(t, t + 1)
            y, state = gated_delta(q[:, s], k[:, s], v[:, s], g[:, s], beta[:, s], state)
            ys.append(y)
            cache.step_states.append(state)
        return mx.concatenate(ys, axis=1), state


def l2_normalize(x: mx.array, eps: float = 1e-6) -> mx.array:
    xf = x.astype(mx.float32)
    return (xf * mx.rsqrt((xf * xf).sum(-1, keepdims=True) + eps)).astype(x.dtype)
