"""Decode path: a few tokens (T <= 8) against a long-lived state, in MLX ops.

The T tokens are treated as one chunk of the chunked algorithm, written in
the state's own [Dv, Dk] layout so S is read by one matmul, S [k_1..k_T,
q_1..q_T], and by the fused decay-and-update that writes it back, instead of
three passes per token in a token loop.
"""

import mlx.core as mx

from ._prep import accum_dtype, causal_decay, init_state, mask_padding

MAX_T = 8


def gated_delta_decode(q, k, v, g, beta, state=None, lengths=None):
    """Same contract as gated_delta_reference, meant for T <= MAX_T."""
    B, T, Hk, Dk = q.shape
    Hv, Dv = v.shape[-2:]
    r = Hv // Hk
    out_dtype, acc = q.dtype, accum_dtype(q.dtype)
    q, k, v, g, beta = (x.astype(acc) for x in mask_padding(q, k, v, g, beta, lengths))
    S = init_state(state, B, Hv, Dv, Dk, acc).reshape(B, Hk, r, Dv, Dk)
    if T == 1:
        y, S = _one_token(q.reshape(B, Hk, 1, Dk), k.reshape(B, Hk, 1, Dk),
                          v.reshape(B, Hk, r, Dv), g.reshape(B, Hk, r), beta.reshape(B, Hk, r), S)
        return y.reshape(B, 1, Hv, Dv).astype(out_dtype), S.reshape(B, Hv, Dv, Dk)
    heads = lambda x: x.reshape(B, T, Hk, -1, x.shape[-1]).transpose(0, 2, 3, 1, 4)
    gates = lambda x: x.reshape(B, T, Hk, r).transpose(0, 2, 3, 1)
    y, S = _few_tokens(heads(q), heads(k), heads(v), gates(g), gates(beta), S)
    y = y.transpose(0, 3, 1, 2, 4).reshape(B, T, Hv, Dv)
    return y.astype(out_dtype), S.reshape(B, Hv, Dv, Dk)


@mx.compile
def _one_token(q, k, v, g, beta, S):
    """One token, the state read once for both products and written once.

    q, k [B,Hk,1,Dk]; v [B,Hk,r,Dv]; g, beta [B,Hk,r]; S [B,Hk,r,Dv,Dk].
    With decay e = exp(g): S' = e S + d k^T where d = beta (v - e S k), so
    S' q = e S q + d (k . q): both S k and S q come from one pass over S.
    """
    decay = mx.exp(g)[..., None]
    P = S @ mx.concatenate([k, q], axis=-2)[..., None, :, :].swapaxes(-1, -2)  # [.., Dv, 2]
    Sk, Sq = P[..., 0], P[..., 1]
    d = beta[..., None] * (v - decay * Sk)
    y = decay * Sq + d * (k * q).sum(-1, keepdims=True)
    S = S * decay[..., None] + d[..., None] * k[..., None, :]
    return y, S


@mx.compile
def _few_tokens(q, k, v, g, beta, S):
    """q, k [B,Hk,1,T,Dk]; v [B,Hk,r,T,Dv]; g, beta [B,Hk,r,T]; S [B,Hk,r,Dv,Dk]."""
    T = q.shape[-2]
    G = mx.cumsum(g, axis=-1)
    eG = mx.exp(G)[..., None]
    decay = causal_decay(G)
    kT = k.swapaxes(-1, -2)
    P = (S @ mx.concatenate([kT, q.swapaxes(-1, -2)], axis=-1)).swapaxes(-1, -2)
    Sk, Sq = P[..., :T, :], P[..., T:, :]  # rows S k_j and S q_j, [.., T, Dv]
    A = mx.tril((k @ kT) * decay * beta[..., None], -1)
    vp = _solve_unit_lower(A, beta[..., None] * (v - eG * Sk))
    y = eG * Sq + ((q @ kT) * decay) @ vp
    kd = k * mx.exp(G[..., -1:] - G)[..., None]
    S = S * mx.exp(G[..., -1])[..., None, None] + vp.swapaxes(-1, -2) @ kd
    return y, S


def _solve_unit_lower(A, X):
    """(I + A)^-1 X by forward substitution; T is small, so unrolled rows."""
    rows = []
    for i in range(A.shape[-1]):
        x = X[..., i, :]
        if i:
            x = x - (A[..., i:i + 1, :i] @ mx.stack(rows, axis=-2))[..., 0, :]
        rows.append(x)
    return mx.stack(rows, axis=-2)
