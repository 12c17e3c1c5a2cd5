"""Few-token path: T <= MAX_T tokens against a long-lived state, in MLX ops.

The T tokens are treated as one chunk of the chunked algorithm, written in
the state's own [Dv, Dk] layout so S is read by one matmul, S [k_1..k_T,
q_1..q_T], and by the fused decay-and-update that writes it back, instead of
three passes per token in a token loop.

`gated_delta_steps` is the same call for a speculative verify: it also returns
what `state_after` needs to form the state after any of the T tokens, so a
rewind reads S once and writes one state, instead of T states being written.
With G_t = g_1 + .. + g_t and d_j the j-th row of the solved update:
    S_t = e^{G_t} S_0 + sum_{j<=t} e^{G_t - G_j} d_j k_j^T
"""

import mlx.core as mx

from ._prep import accum_dtype, causal_decay, init_state, mask_padding

MAX_T = 8


def gated_delta_decode(q, k, v, g, beta, state=None, lengths=None):
    """Same contract as gated_delta_reference, meant for T <= MAX_T."""
    B, T, Hk, Dk = q.shape
    if T > 1:
        y, S, _ = _chunk(q, k, v, g, beta, state, lengths)
        return y, S
    Hv, Dv = v.shape[-2:]
    r, out_dtype, acc = Hv // Hk, q.dtype, accum_dtype(q.dtype)
    q, k, v, g, beta = (x.astype(acc) for x in mask_padding(q, k, v, g, beta, lengths))
    S = init_state(state, B, Hv, Dv, Dk, acc).reshape(B, Hk, r, Dv, Dk)
    y, S = _one_token(q.reshape(B, Hk, 1, Dk), k.reshape(B, Hk, 1, Dk), v.reshape(B, Hk, r, Dv),
                      g.reshape(B, Hk, r), beta.reshape(B, Hk, r), S)
    return y.reshape(B, 1, Hv, Dv).astype(out_dtype), S.reshape(B, Hv, Dv, Dk)


def gated_delta_steps(q, k, v, g, beta, state=None):
    """gated_delta_decode plus `terms`: state_after(state, terms, t) is the state
    after the first t tokens (state_after(.., 0) is the state given)."""
    return _chunk(q, k, v, g, beta, state, None)


def state_after(first, terms, t: int):
    """The state [B, Hv, Dv, Dk] after t of the tokens of a gated_delta_steps call
    that started from `first` (None: zeros)."""
    d, k, decay, eG = terms
    B, Hk, r, T, Dv = d.shape
    shape = (B, Hk * r, Dv, k.shape[-1])
    if first is None:
        first = mx.zeros(shape, mx.float32)
    if t == 0:
        return first
    S = first.reshape(B, Hk, r, Dv, -1) * eG[..., t - 1, None, None]
    S = S + (d * decay[..., t - 1, :, None]).swapaxes(-1, -2) @ k
    return S.reshape(shape)


def _chunk(q, k, v, g, beta, state, lengths):
    B, T, Hk, Dk = q.shape
    Hv, Dv = v.shape[-2:]
    r = Hv // Hk
    out_dtype, acc = q.dtype, accum_dtype(q.dtype)
    q, k, v, g, beta = (x.astype(acc) for x in mask_padding(q, k, v, g, beta, lengths))
    S = init_state(state, B, Hv, Dv, Dk, acc).reshape(B, Hk, r, Dv, Dk)
    heads = lambda x: x.reshape(B, T, Hk, -1, x.shape[-1]).transpose(0, 2, 3, 1, 4)
    gates = lambda x: x.reshape(B, T, Hk, r).transpose(0, 2, 3, 1)
    y, S, *terms = _few_tokens(heads(q), heads(k), heads(v), gates(g), gates(beta), S)
    y = y.transpose(0, 3, 1, 2, 4).reshape(B, T, Hv, Dv)
    return y.astype(out_dtype), S.reshape(B, Hv, Dv, Dk), terms


@mx.compile
def _one_token(q, k, v, g, beta, S):
    """One token, S read once for both products and written once: with e = exp(g),
    S' = e S + d k^T where d = beta (v - e S k), so S' q = e S q + d (k . q).
    q, k [B,Hk,1,Dk]; v [B,Hk,r,Dv]; g, beta [B,Hk,r]; S [B,Hk,r,Dv,Dk]."""
    decay = mx.exp(g)[..., None]
    P = S @ mx.concatenate([k, q], axis=-2)[..., None, :, :].swapaxes(-1, -2)  # [.., Dv, 2]
    d = beta[..., None] * (v - decay * P[..., 0])
    y = decay * P[..., 1] + d * (k * q).sum(-1, keepdims=True)
    return y, S * decay[..., None] + d[..., None] * k[..., None, :]


@mx.compile
def _few_tokens(q, k, v, g, beta, S):
    """q, k [B,Hk,1,T,Dk]; v [B,Hk,r,T,Dv]; g, beta [B,Hk,r,T]; S [B,Hk,r,Dv,Dk].
    -> y, S_T and state_after's terms (d, k, decay, e^G)."""
    T = q.shape[-2]
    G = mx.cumsum(g, axis=-1)
    eG = mx.exp(G)
    decay = causal_decay(G)
    kT = k.swapaxes(-1, -2)
    P = (S @ mx.concatenate([kT, q.swapaxes(-1, -2)], axis=-1)).swapaxes(-1, -2)
    Sk, Sq = P[..., :T, :], P[..., T:, :]  # rows S k_j and S q_j, [.., T, Dv]
    A = mx.tril((k @ kT) * decay * beta[..., None], -1)
    d = _solve_unit_lower(A, beta[..., None] * (v - eG[..., None] * Sk))
    y = eG[..., None] * Sq + ((q @ kT) * decay) @ d
    kd = k * mx.exp(G[..., -1:] - G)[..., None]
    S = S * eG[..., -1, None, None] + d.swapaxes(-1, -2) @ kd
    return y, S, d, k, decay, eG


def _solve_unit_lower(A, X):
    """(I + A)^-1 X by forward substitution; T is small, so unrolled rows."""
    rows = []
    for i in range(A.shape[-1]):
        x = X[..., i, :]
        if i:
            x = x - (A[..., i:i + 1, :i] @ mx.stack(rows, axis=-2))[..., 0, :]
        rows.append(x)
    return mx.stack(rows, axis=-2)
