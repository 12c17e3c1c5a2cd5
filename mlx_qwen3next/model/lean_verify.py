"""The few-token layer steps of a speculative verify call, activations [B*T, hidden].

The verify forward of speculative decoding feeds T = k + 1 tokens (T <= 5) with
`keep_steps` set, so the cache can later be rewound to any of them. These steps
are lean_layers.py's one-token steps widened to T tokens, compiled per layer the
same way (lean_decode.py), with three differences:

- attention writes T positions at an array slot; query t sees keys <= slot + t;
- the MoE sorts the T*k (token, expert) pairs by expert (moe_sorted);
- the DeltaNet recurrence over the T tokens is done in chunk form (as
  kernels/decode.py's few-token path): the state S is read once, by one matmul
  S [k_1..k_T, q_1..q_T], the T x T interactions among the tokens are small
  products, and only the last state is written. The states after tokens
  1..T-1, which a rewind may ask for, are not formed in the graph:
  `VerifyStates` forms the one asked for, from the state before the call and
  the small per-token terms (one read of S and one write, against T reads and
  writes for a per-token loop).

With decay e_t = exp(g_t), G_t = g_1 + .. + g_t and S_t the state after token t:
    S_t = e^{G_t} S_0 + sum_{j<=t} e^{G_t - G_j} d_j k_j^T
    d_t = beta_t (v_t - e^{G_t} S_0 k_t - sum_{j<t} e^{G_t - G_j} (k_j . k_t) d_j)
    y_t = S_t q_t = e^{G_t} S_0 q_t + sum_{j<=t} e^{G_t - G_j} (k_j . q_t) d_j
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..kernels._prep import causal_decay
from .deltanet import causal_conv, l2_normalize, log_decay
from .lean_layers import _gated_norm, _qkvz_orders, dense_mlp, residuals, rotate, route
from .moe import SparseMoeBlock

MAX_TOKENS = 5  # speculative decoding verifies at most 4 drafts + 1


def deltanet_layer(layer, x, conv_state, state):
    """T-token DecoderLayer step with a DeltaNet mixer ->
    (x, window, last state, *VerifyStates terms)."""
    h, window, state, *terms = deltanet(layer.linear_attn, layer.input_layernorm(x),
                                        conv_state, state)
    return (residuals(layer, x, h, mlp), window, state, *terms)


def attention_layer(layer, x, keys, values, slot, position, *rope):
    """T-token DecoderLayer step with gated attention -> (x, keys, values)."""
    h, keys, values = attention(layer.self_attn, layer.input_layernorm(x), keys, values,
                                slot, position, rope)
    return residuals(layer, x, h, mlp), keys, values


# -- Gated DeltaNet ----------------------------------------------------------

def deltanet(m, x, conv_state, state):
    """x [B*T, H] (row b*T + t) -> (out [B*T, H], window [B, K-1+T, C], S_T, *terms),
    terms: what VerifyStates needs to form the states in between.

    Heads are laid out [B, Hk, r, ...] against the state viewed [B, Hk, r, Dv, Dk];
    per-token vectors are columns: v, d [B, Hk, r, Dv, T]."""
    B, nk, dk, nv, dv = conv_state.shape[0], m.nk, m.dk, m.nv, m.dv
    T, r = x.shape[0] // B, nv // nk
    qkvz = m.in_proj_qkvz(x)
    order_qkv, order_z = _qkvz_orders(nk, dk, r * dv)
    mixed = mx.take_along_axis(qkvz, order_qkv, axis=1).reshape(B, T, -1)
    window = mx.concatenate([conv_state.astype(x.dtype), mixed], axis=1)
    conv = causal_conv(window, m.conv1d.weight, T)
    qk, v = mx.split(nn.silu(conv), [2 * nk * dk], axis=-1)
    qk = _normalised_qk(qk.reshape(B, T, 2, nk, dk), x.dtype)  # [B, Hk, 1, 2T, Dk]: q.., k..
    v = v.reshape(B, T, nk, r, dv).transpose(0, 2, 3, 4, 1).astype(mx.float32)
    g, beta = _gates(m, m.in_proj_ba(x).reshape(B, T, nk, 2 * r))  # [B, Hk, r, T]
    S = state.reshape(B, nk, r, dv, dk)
    y, S, *terms = _delta_chunk(qk, v, g, beta, S)
    y = y.transpose(0, 4, 1, 2, 3).reshape(B * T, nv, dv)
    z = mx.take_along_axis(qkvz, order_z, axis=1).reshape(B * T, nv, dv)
    y = _gated_norm(m.norm, y.astype(x.dtype), z)
    return (m.out_proj(y.reshape(B * T, -1)), window, S.reshape(state.shape), *terms)


def _normalised_qk(qk, dtype):
    """[B, T, 2, Hk, Dk] -> [B, Hk, 1, 2T, Dk] (q_1..q_T, k_1..k_T), L2-normalised in
    float32, q also scaled by Dk^-0.5, rounded to the model's dtype as the plain path does."""
    B, T, _, nk, dk = qk.shape
    qk = l2_normalize(qk)
    scale = mx.array([dk ** -0.5, 1.0]).reshape(1, 1, 2, 1, 1)
    qk = (qk * scale).astype(dtype).astype(mx.float32)
    return qk.transpose(0, 3, 2, 1, 4).reshape(B, nk, 1, 2 * T, dk)


def _gates(m, ba):
    """[B, T, Hk, 2r] ([b | a] per key head) -> log-decay g, beta [B, Hk, r, T]; float32."""
    b, a = mx.split(ba.astype(mx.float32).transpose(0, 2, 3, 1), 2, axis=2)
    heads = lambda p: p.reshape(a.shape[1:3] + (1,))
    return log_decay(a, heads(m.A_log), heads(m.dt_bias)), mx.sigmoid(b)


def _delta_chunk(qk, v, g, beta, S):
    """The T tokens as one chunk; see the module docstring.

    qk [B, Hk, 1, 2T, Dk]; v [B, Hk, r, Dv, T]; g, beta [B, Hk, r, T]; S [B, Hk, r, Dv, Dk].
    Returns y [B, Hk, r, Dv, T], S_T, and the terms VerifyStates needs: D [B, Hk, r, Dv, T]
    (the d_t as columns), K [B, Hk, 1, T, Dk], decay [B, Hk, r, T, T] (e^{G_t - G_j} for
    j <= t, else 0) and e^{G_t} [B, Hk, r, 1, T]."""
    T = v.shape[-1]
    SP = S @ qk.swapaxes(-1, -2)  # [.., Dv, 2T]: S q_t, then S k_t; S read once
    Sq, Sk = SP[..., :T], SP[..., T:]
    Q, K = qk[..., :T, :], qk[..., T:, :]
    G = mx.cumsum(g, axis=-1)
    eG = mx.exp(G)[..., None, :]  # [.., 1, T], per column
    decay = causal_decay(G)  # [t, j]
    KK = (K @ K.swapaxes(-1, -2)) * decay  # [t, j] e^{G_t-G_j} (k_t . k_j)
    X = beta[..., None, :] * (v - eG * Sk)
    cols = [X[..., 0:1]]
    for t in range(1, T):  # forward substitution, one column per token
        prev = mx.concatenate(cols, axis=-1) if t > 1 else cols[0]
        a = beta[..., t:t + 1, None] * KK[..., t:t + 1, :t]  # [.., 1, t]
        cols.append(X[..., t:t + 1] - (prev * a).sum(-1, keepdims=True))
    D = mx.concatenate(cols, axis=-1) if T > 1 else cols[0]
    y = eG * Sq + D @ ((Q @ K.swapaxes(-1, -2)) * decay).swapaxes(-1, -2)
    last = S * eG[..., -1:] + (D * decay[..., -1:, :]) @ K
    return y, last, D, K, decay, eG


# -- gated attention ---------------------------------------------------------

def attention(a, x, keys, values, slot, position, rope):
    """x [B*T, H]; keys, values [B, Hkv, capacity, D]; writes positions slot..slot+T-1;
    query t attends over positions <= slot + t. -> (out [B*T, H], keys, values)"""
    B, Hkv, D = keys.shape[0], a.n_kv_heads, a.head_dim
    T, rep = x.shape[0] // B, a.n_heads // Hkv
    steps = mx.arange(T, dtype=mx.int32)
    pos = (position + steps)[:, None]  # [T, 1]
    q, gate = mx.split(a.q_proj(x).reshape(B, T, Hkv, rep, 2 * D), 2, axis=-1)
    q = rotate(a.q_norm(q).transpose(0, 2, 3, 1, 4), pos, rope) * a.scale  # [B, Hkv, rep, T, D]
    k = a.k_norm(a.k_proj(x).reshape(B, T, Hkv, D)).transpose(0, 2, 1, 3)
    keys = mx.slice_update(keys, rotate(k, pos, rope), slot, axes=(2,))
    v = a.v_proj(x).reshape(B, T, Hkv, D).transpose(0, 2, 1, 3)
    values = mx.slice_update(values, v, slot, axes=(2,))

    capacity = keys.shape[2]
    scores = q.reshape(B, Hkv, rep * T, D) @ keys.swapaxes(-1, -2)  # GQA without repeats
    visible = mx.arange(capacity, dtype=mx.int32) <= (slot + steps)[:, None]  # [T, capacity]
    scores = mx.where(visible, scores.reshape(B, Hkv, rep, T, capacity), -mx.inf)
    out = mx.softmax(scores, axis=-1, precise=True).reshape(B, Hkv, rep * T, capacity) @ values
    out = out.reshape(B, Hkv, rep, T, D).transpose(0, 3, 1, 2, 4).reshape(B * T, -1)
    return a.o_proj(out * mx.sigmoid(gate.reshape(B * T, -1))), keys, values


class VerifyStates:
    """The DeltaNet state before a verify call and after each of its T tokens, as
    DeltaNetCache.step_states (a sequence of T + 1 states). The first and the last
    are arrays; one in between is formed when asked for (lazily, like any MLX array):
    S_t = e^{G_t} S_0 + (D * e^{G_t - G_j}) K."""

    def __init__(self, first, last, D, K, decay, eG):
        self.first, self.last = first, last
        self.D, self.K, self.decay, self.eG = D, K, decay, eG

    def __len__(self) -> int:
        return self.D.shape[-1] + 1

    def __getitem__(self, t: int) -> mx.array:
        n = len(self)
        t = t + n if t < 0 else t
        if not 0 <= t < n:
            raise IndexError(t)
        if t == 0:
            return self.first
        if t == n - 1:
            return self.last
        S = self.first.reshape(self.D.shape[:-1] + self.K.shape[-1:])
        row = self.decay[..., t - 1:t, :]  # [.., 1, T]: e^{G_t - G_j}, 0 for j > t
        S = S * self.eG[..., t - 1:t] + (self.D * row) @ self.K
        return S.reshape(self.first.shape)


# -- MLP / MoE -----------------------------------------------------------------

def mlp(block, x):
    return moe_sorted(block, x) if isinstance(block, SparseMoeBlock) else dense_mlp(block, x)


def moe_sorted(block, x):
    """SparseMoeBlock on x [N, H] with the N*k (token, expert) pairs sorted by expert, so an
    expert picked by several tokens is read by consecutive products, the second time
    mostly from cache (MLX's CPU gather_mm reads an expert's weights once per pair).
    Measured at the real dims (64 experts, float32, 2-core CPU): 105 -> 94 ms at 5 tokens,
    no change at 2 (18 distinct experts of 20 pairs on average)."""
    N, k = x.shape[0], block.top_k
    experts, scores = route(block, x)
    flat = experts.reshape(-1)
    order = mx.argsort(flat)
    idx, token = flat[order], (order // k).astype(mx.uint32)
    sw, xe = block.switch_mlp, x.reshape(N, 1, -1)
    h = nn.silu(sw.gate_proj(xe, idx, sorted_indices=True, lhs_indices=token)) * sw.up_proj(
        xe, idx, sorted_indices=True, lhs_indices=token)  # [N*k, 1, I]
    h = h * scores.reshape(-1)[order].reshape(-1, 1, 1).astype(h.dtype)
    y = sw.down_proj(h, idx, sorted_indices=True,
                     lhs_indices=mx.arange(N * k, dtype=mx.uint32))  # [N*k, 1, H]
    y = y[mx.argsort(order)].reshape(N, k, -1).sum(axis=1)
    return y + mx.sigmoid(block.shared_expert_gate(x)) * dense_mlp(block.shared_expert, x)
