"""The one-token layer steps that lean_decode.py compiles, activations [B, hidden].

Same math as the plain modules, arranged so a step needs few view primitives:
per-head layouts are reached with one reshape and kept (the DeltaNet state is
viewed [B, 1, Hk, r, Dv, Dk] so keys, queries, gates and values broadcast
against it unchanged), interleaved projection outputs are reordered with one
gather, and the KV buffer is written at an array position with later keys masked.

Activations are MLX's own ops, not activations.py's CPU polynomials: at one token
an activation is a few thousand elements, so what it costs is its primitives, and
mx.sigmoid / nn.silu fuse into one compiled node where a polynomial exp takes several.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .deltanet import l2_normalize, log_decay
from .moe import SparseMoeBlock


def deltanet_layer(layer, x, conv_state, state):
    """One DecoderLayer step with a DeltaNet mixer -> (x, conv_state, state)."""
    h, conv_state, state = deltanet(layer.linear_attn, layer.input_layernorm(x), conv_state, state)
    return residuals(layer, x, h, mlp), conv_state, state


def attention_layer(layer, x, keys, values, slot, position, *rope):
    """One DecoderLayer step with gated attention -> (x, keys, values)."""
    h, keys, values = attention(layer.self_attn, layer.input_layernorm(x), keys, values,
                                slot, position, rope)
    return residuals(layer, x, h, mlp), keys, values


def residuals(layer, x, h, mlp_step):
    """x + mixer output h, then the (MoE) MLP on its post-attention norm, added."""
    x = x + h
    return x + mlp_step(layer.mlp, layer.post_attention_layernorm(x))


# -- Gated DeltaNet ----------------------------------------------------------

def deltanet(m, x, conv_state, state):
    """x [B, H] -> (out [B, H], conv_state, state); see GatedDeltaNet and kernels/decode.py.

    Per-head tensors are laid out to broadcast against the state viewed as
    [B, 1, Hk, r, Dv, Dk]: q, k [B, 1, Hk, 1, 1, Dk]; v [B, 1, Hk, r, Dv, 1];
    gates [B, 1, Hk, r, 1, 1]."""
    B, nk, dk, nv, dv = x.shape[0], m.nk, m.dk, m.nv, m.dv
    qkvz = m.in_proj_qkvz(x)
    order_qkv, order_z = _qkvz_orders(nk, dk, nv // nk * dv)
    window = mx.concatenate(
        [conv_state.astype(x.dtype), mx.take_along_axis(qkvz, order_qkv, axis=1)[:, None]], axis=1
    )
    conv = nn.silu((window * m.conv1d.weight.swapaxes(0, 2)).sum(axis=1, keepdims=True))
    qk, v = mx.split(conv, [2 * nk * dk], axis=-1)
    qk = _normalised_qk(qk.reshape(B, 2, nk, 1, 1, dk), x.dtype)
    decay, beta = _gates(m, m.in_proj_ba(x).reshape(B, 1, nk, 2 * (nv // nk), 1, 1))
    v = v.reshape(B, 1, nk, nv // nk, dv, 1).astype(mx.float32)
    S = state.reshape(B, 1, nk, nv // nk, dv, dk)
    y, S = _delta_step(qk, v, decay, beta, S)
    z = mx.take_along_axis(qkvz, order_z, axis=1).reshape(B, nv, dv)
    y = _gated_norm(m.norm, y.astype(x.dtype).reshape(B, nv, dv), z)
    return m.out_proj(y.reshape(B, -1)), window[:, 1:], S.reshape(state.shape)


def _gated_norm(norm, y, z):
    """GatedRMSNorm."""
    gated = mx.fast.rms_norm(y, norm.weight, norm.eps).astype(mx.float32) * nn.silu(
        z.astype(mx.float32))
    return gated.astype(y.dtype)


def _normalised_qk(qk, dtype):
    """[B, 2, Hk, 1, 1, Dk] (q then k) L2-normalised in float32, q also scaled by Dk^-0.5."""
    qk = l2_normalize(qk)
    scale = np.array([qk.shape[-1] ** -0.5, 1.0]).reshape(1, 2, 1, 1, 1, 1)
    # rounded to the model's dtype where the plain path hands q, k to the delta rule
    return (qk * mx.array(scale)).astype(dtype).astype(mx.float32)


def _gates(m, ba):
    """[B, 1, Hk, 2r, 1, 1] ([b | a] per key head) -> decay exp(g), beta; float32."""
    b, a = mx.split(ba.astype(mx.float32), 2, axis=3)
    heads = lambda p: p.reshape(a.shape[2:4] + (1, 1))
    return mx.exp(log_decay(a, heads(m.A_log), heads(m.dt_bias))), mx.sigmoid(b)


def _delta_step(qk, v, decay, beta, S):
    """S' = e S + d k^T with d = beta (v - e S k), and y = S' q = e S q + d (k . q):
    S is read once, by one matmul, for both S k and S q."""
    q, k = mx.split(qk, 2, axis=1)
    Sq, Sk = mx.split(S @ qk.transpose(0, 3, 2, 4, 5, 1), 2, axis=-1)  # [.., Dv, 1] each
    d = beta * (v - decay * Sk)
    y = decay * Sq + d * (q * k).sum(-1, keepdims=True)
    return y, S * decay + d * k


def _qkvz_orders(nk: int, dk: int, vz: int):
    """Indices into in_proj_qkvz's output ([q | k | v | z] per key head) that give the
    conv channels [all q | all k | all v] and the gate z, as [1, n] for take_along_axis."""
    base = np.arange(nk)[:, None] * (2 * dk + 2 * vz)
    q = base + np.arange(dk)
    k = q + dk
    v = base + 2 * dk + np.arange(vz)
    z = v + vz
    as_row = lambda *parts: mx.array(np.concatenate([p.ravel() for p in parts])[None], mx.uint32)
    return as_row(q, k, v), as_row(z)


# -- gated attention ---------------------------------------------------------

def attention(a, x, keys, values, slot, position, rope):
    """x [B, H]; keys, values [B, Hkv, capacity, D]; writes position `slot` and attends
    over positions <= slot. -> (out [B, H], keys, values)"""
    B, Hkv, D = x.shape[0], a.n_kv_heads, a.head_dim
    q, gate = mx.split(a.q_proj(x).reshape(B, Hkv, a.n_heads // Hkv, 2 * D), 2, axis=-1)
    q = rotate(a.q_norm(q), position, rope) * a.scale
    k = rotate(a.k_norm(a.k_proj(x).reshape(B, Hkv, 1, D)), position, rope)
    keys = mx.slice_update(keys, k, slot, axes=(2,))
    values = mx.slice_update(values, a.v_proj(x).reshape(B, Hkv, 1, D), slot, axes=(2,))

    scores = q @ keys.swapaxes(-1, -2)  # [B, Hkv, rep, capacity]: GQA without repeating keys
    # mx.arange, not a numpy constant: the compile cache keeps a trace per buffer size,
    # and a constant would stay alive in each
    filled = mx.arange(keys.shape[2], dtype=mx.int32) <= slot
    scores = mx.where(filled, scores, -mx.inf)
    out = mx.softmax(scores, axis=-1, precise=True) @ values
    return a.o_proj((out * mx.sigmoid(gate)).reshape(B, -1)), keys, values


def rope_tables(rope, head_dim: int):
    """PartialRoPE as x * cos + (x @ R) * sin over the whole head: per-feature inverse
    frequencies (0 past the rotated dims, so cos 1 and sin 0 there), the YaRN scale
    of the rotated features, and R, the signed permutation that rotates halves."""
    dims, half = rope.dims, rope.dims // 2
    inv = np.zeros(head_dim, np.float32)
    inv[:half] = inv[half:dims] = 1.0 / np.array(rope._freqs, np.float32)
    scale = np.ones(head_dim, np.float32)
    scale[:dims] = rope.attention_scaling
    R = np.zeros((head_dim, head_dim), np.float32)
    R[np.arange(half) + half, np.arange(half)] = -1.0  # first half gets -x2
    R[np.arange(half), np.arange(half) + half] = 1.0  # second half gets x1
    return mx.array(inv), mx.array(scale), mx.array(R)


def rotate(x, position, rope):
    inv_freq, scale, R = rope
    theta = position.astype(mx.float32) * inv_freq  # per call: fuses with its use
    x = x * scale.astype(x.dtype)
    return (x * mx.cos(theta) + (x @ R.astype(x.dtype)) * mx.sin(theta)).astype(x.dtype)


# -- MLP / MoE -----------------------------------------------------------------

def mlp(block, x):
    return moe(block, x) if isinstance(block, SparseMoeBlock) else dense_mlp(block, x)


def dense_mlp(block, x):
    """moe.MLP."""
    return block.down_proj(nn.silu(block.gate_proj(x)) * block.up_proj(x))


def route(block, x):
    """SparseMoeBlock.route for few rows -> (experts [N, k], scores [N, k] float32)."""
    k = block.top_k
    logits = block.gate(x).astype(mx.float32)
    # as SparseMoeBlock.route orders them, so ties (common in bf16) break the same way
    experts = mx.argpartition(-logits, kth=k - 1, axis=-1)[..., :k]
    if block.norm_topk_prob:  # softmax over all, renormalised over the top k = softmax of the top k
        return experts, mx.softmax(mx.take_along_axis(logits, experts, axis=-1), axis=-1)
    return experts, mx.take_along_axis(mx.softmax(logits, axis=-1), experts, axis=-1)


def moe(block, x):
    """SparseMoeBlock on x [B, H] with its routed experts gathered per row."""
    B, k = x.shape[0], block.top_k
    experts, scores = route(block, x)
    # explicit row indices: gather_mm would build (and count) them every step
    rows = np.arange(B * k, dtype=np.uint32).reshape(B, k)
    sw, xe = block.switch_mlp, x.reshape(B, 1, -1)
    token = mx.array(rows // k)
    h = nn.silu(sw.gate_proj(xe, experts, lhs_indices=token)) * sw.up_proj(
        xe, experts, lhs_indices=token)  # [B, k, 1, I]
    h = h * scores.reshape(B, k, 1, 1).astype(h.dtype)  # weight before down_proj (linear)
    y = sw.down_proj(h, experts, lhs_indices=mx.array(rows)).sum(axis=(1, 2))  # -> [B, H]
    return y + mx.sigmoid(block.shared_expert_gate(x)) * dense_mlp(block.shared_expert, x)
