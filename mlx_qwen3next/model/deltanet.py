"""The Gated DeltaNet mixer: projections, causal depthwise conv, the gated delta rule, gated norm."""

from __future__ import annotations

from functools import partial

import mlx.core as mx
import mlx.nn as nn

from ..config import ModelConfig
from ..kernels import gated_delta, gated_delta_steps
from . import constants
from .norms import GatedRMSNorm


class GatedDeltaNet(nn.Module):
    FUSED = ("in_proj_qkvz", "in_proj_ba")  # see fused.py

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
        self.act = nn.SiLU()  # after the conv
        self.dt_bias = mx.ones((self.nv,))
        self.A_log = mx.zeros((self.nv,))
        # q goes unscaled (prepare_inputs); y = S q is linear in q and the norm of y is
        # scale-free but for its eps, so Dk^-0.5 on q is eps * Dk here: the same output
        self.norm = GatedRMSNorm(self.dv, eps=cfg.rms_norm_eps * self.dk)
        self.out_proj = nn.Linear(self.value_dim, H, bias=False)

    def __call__(self, x: mx.array, cache=None, pad_mask=None, lengths=None) -> mx.array:
        B, L, _ = x.shape
        if pad_mask is not None:
            x = mx.where(pad_mask[..., None], x, 0)  # padding feeds zeros to the conv
        conv_state = cache.conv_state if cache is not None else None
        if conv_state is None:
            conv_state = mx.zeros((B, self.kernel - 1, self.conv_dim), x.dtype)
        mixed, z, b, a = self.project(x)
        q, k, v, g, beta, window = _prepare(self.act, (self.nk, self.dk, self.nv, self.dv))(
            mixed, b, a, conv_state.astype(x.dtype), self.conv1d.weight, self.A_log, self.dt_bias,
        )
        state = cache.recurrent_state if cache is not None else None
        if cache is not None and cache.keep_steps:  # a verify: keep what a rewind needs
            y, new_state, terms = gated_delta_steps(q, k, v, g, beta, state)
            cache.step_first, cache.step_terms, cache.step_window = state, terms, window
        else:
            y, new_state = gated_delta(q, k, v, g, beta, state, lengths)
        if cache is not None:
            cache.conv_state, cache.recurrent_state = window[:, L:, :], new_state
        return self.out_proj(self.norm(y, z))

    def project(self, x: mx.array):
        """x -> the conv's input [q | k | v], z, b and a, each [B, L, -1], every head's
        together: one product split, once fused.py has joined the projections in the
        order `fused_rows` gives; else both products and `by_kind`."""
        if "fused" in self:
            return self["fused"].split(self["fused"].proj(x))
        return by_kind(self.in_proj_qkvz(x), self.in_proj_ba(x), self.nk, self.dk)

    def fused_rows(self):
        """For fused.py: the joined in_proj_qkvz and in_proj_ba's rows in `project`'s
        order (what by_kind makes of their row numbers), and each output's size."""
        n_qkvz, n_ba = 2 * self.key_dim + 2 * self.value_dim, 2 * self.nv
        rows = by_kind(mx.arange(n_qkvz)[None, None], mx.arange(n_qkvz, n_qkvz + n_ba)[None, None],
                       self.nk, self.dk)
        return mx.concatenate([r.reshape(-1) for r in rows]), [r.size for r in rows]


_PREPARE = {}


def _prepare(act, heads):
    """prepare_inputs compiled once per (activation kind, head shapes)."""
    key = (type(act), heads)
    if key not in _PREPARE:
        _PREPARE[key] = mx.compile(partial(prepare_inputs, act=act, heads=heads))
    return _PREPARE[key]


def by_kind(qkvz: mx.array, ba: mx.array, nk: int, dk: int):
    """The checkpoint's projections, interleaved per key-head group ([q | k | v.. | z..]
    and [b.. | a..] for each of the nk groups) -> [q | k | v], z, b, a: every head's
    together, [B, L, -1] each."""
    B, L, _ = qkvz.shape
    vz = qkvz.shape[-1] // nk - 2 * dk  # a group's v and z
    q, k, v, z = mx.split(qkvz.reshape(B, L, nk, -1), [dk, 2 * dk, 2 * dk + vz // 2], -1)
    b, a = mx.split(ba.reshape(B, L, nk, -1), 2, -1)
    flat = lambda x: x.reshape(B, L, -1)
    return mx.concatenate([flat(q), flat(k), flat(v)], -1), flat(z), flat(b), flat(a)


def prepare_inputs(mixed, b, a, conv_state, conv_weight, A_log, dt_bias, act, heads):
    """The projections (`by_kind`'s layout) -> the delta rule's inputs: one compiled
    graph, so few primitives.

    Runs the depthwise causal conv over [conv_state, mixed] with `act` (SiLU),
    L2-normalises q and k together (q is not scaled by Dk^-0.5: see GatedDeltaNet.norm)
    and computes the gates in float32.
    Returns q, k, v, g, beta and the conv window (its tail is the next conv state).
    """
    nk, dk, nv, dv = heads
    B, L, _ = mixed.shape
    window = mx.concatenate([conv_state, mixed], axis=1)
    qk, v = mx.split(act(causal_conv(window, conv_weight, L)), [2 * nk * dk], -1)
    q, k = mx.split(l2_normalize(qk.reshape(B, L, 2 * nk, dk)), 2, axis=2)
    beta = mx.sigmoid(b.astype(mx.float32))
    g = log_decay(a, A_log, dt_bias)
    return (q.astype(mixed.dtype), k.astype(mixed.dtype), v.reshape(B, L, nv, dv), g, beta,
            window)


def l2_normalize(x: mx.array, eps: float = 1e-6) -> mx.array:
    """x * rsqrt(sum(x^2) + eps) over the last axis: the RMS norm with eps / D and a
    constant weight of D^-0.5, one fused kernel on a GPU. It accumulates in float32;
    the weight is rounded to x's dtype (bf16: within 2^-9 of it)."""
    D = x.shape[-1]
    return mx.fast.rms_norm(x, constants.filled(D, D**-0.5, x.dtype), eps / D)


def causal_conv(window: mx.array, conv_weight: mx.array, L: int) -> mx.array:
    """The depthwise causal conv: window [B, K-1+L, C], conv1d weight [C, K, 1] -> [B, L, C]."""
    K = conv_weight.shape[1]
    taps = mx.split(conv_weight.transpose(2, 1, 0), K, axis=1)  # K x [1, 1, C]
    # one token: the window's K rows are the taps' inputs, one split (not K slices)
    rows = mx.split(window, K, axis=1) if L == 1 else [window[:, i : i + L] for i in range(K)]
    out = rows[0] * taps[0]
    for i in range(1, K):
        out = out + rows[i] * taps[i]
    return out


def log_decay(a: mx.array, A_log: mx.array, dt_bias: mx.array) -> mx.array:
    """g = -exp(A_log) * softplus(a + dt_bias) in float32 (A_log, dt_bias broadcast to a)."""
    f32 = lambda x: x.astype(mx.float32)
    return -mx.exp(f32(A_log)) * nn.softplus(f32(a) + f32(dt_bias))
