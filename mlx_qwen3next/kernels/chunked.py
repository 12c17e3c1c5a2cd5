"""Chunked gated delta rule (WY representation / UT transform).

Within a chunk of C tokens the recurrence becomes matrix products (G is the
cumulative log-decay, A = diag(beta) (K K^T) * exp(G_i - G_j) strictly lower):
    T = (I + A)^-1,  W = T diag(beta e^G) K,  U = T diag(beta) V
    V' = U - W H,    O = (Q e^G) H + (Q K^T * exp(G_i - G_j), causal) V'
    H <- e^{G_C} H + (K e^{G_C - G})^T V'
with H = S^T of shape [Dk, Dv]. Only the last two lines run chunk by chunk;
the rest is batched over a group of chunks. Groups are evaluated one at a
time so long prompts keep a bounded set of intermediates.
"""

import mlx.core as mx

from ._prep import accum_dtype, causal_decay, eval_if_eager, init_state, mask_padding

CHUNK = 64
GROUP = 8  # chunks per group (512 tokens at C = 64)


def gated_delta_chunked(q, k, v, g, beta, state=None, lengths=None, *,
                        chunk=CHUNK, group=GROUP):
    """Same contract as gated_delta_reference; any T, left-padded rows via lengths."""
    B, T, Hk, Dk = q.shape
    Hv, Dv = v.shape[-2:]
    out_dtype, acc = q.dtype, accum_dtype(q.dtype)
    q, k, v, g, beta = mask_padding(q, k, v, g, beta, lengths)
    C = min(chunk, T)
    span = C * group
    H = init_state(state, B, Hv, Dv, Dk, acc).swapaxes(-1, -2).reshape(B * Hv, Dk, Dv)
    ys = []
    for t0 in range(0, T, span):
        part = (x[:, t0:t0 + span].astype(acc) for x in (q, k, v, g, beta))
        y, H = _group(*part, H, C)
        ys.append(y.astype(out_dtype))
        if T > span:  # bound memory: one group's intermediates at a time
            eval_if_eager(ys[-1], H)
    y = ys[0] if len(ys) == 1 else mx.concatenate(ys, axis=1)
    return y, H.reshape(B, Hv, Dk, Dv).swapaxes(-1, -2)


def _group(q, k, v, g, beta, H, C):
    """Tokens of a few chunks: [B, t, heads, ...] in, y [B, t, Hv, Dv] out."""
    B, t, Hk, Dk = q.shape
    Hv, Dv = v.shape[-2:]
    pad = -t % C
    n = (t + pad) // C
    qc, kc = (_split(x[:, :, :, None], pad, C) for x in (q, k))  # [n,B,Hk,1,C,Dk]
    vc = _split(v.reshape(B, t, Hk, -1, Dv), pad, C)  # [n,B,Hk,r,C,Dv]
    gc, bc = (_split(x.reshape(B, t, Hk, -1), pad, C) for x in (g, beta))  # [n,B,Hk,r,C]
    W, U, qg, Aqk, kd, gC = (x.reshape(n, B * Hv, *x.shape[-2:])
                             for x in _intra(qc, kc, vc, gc, bc))
    ys = []
    for i in range(n):  # the only sequential part: carry the state
        vn = U[i] - W[i] @ H
        ys.append(qg[i] @ H + Aqk[i] @ vn)
        H = H * gC[i] + kd[i].swapaxes(-1, -2) @ vn
    y = mx.stack(ys).reshape(n, B, Hv, C, Dv).transpose(1, 0, 3, 2, 4)
    return y.reshape(B, n * C, Hv, Dv)[:, :t], H


def _split(x, pad, C):
    """[B, t, Hk, r, ...] -> [n, B, Hk, r, C, ...], zero-padded at the end of t."""
    if pad:
        x = mx.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    B, tp = x.shape[:2]
    x = x.reshape(B, tp // C, C, *x.shape[2:])
    return x.transpose(1, 0, 3, 4, 2, *range(5, x.ndim))


def _intra(q, k, v, g, beta):
    """Everything that is parallel over chunks: W, U, Q e^G, the causal decayed
    Q K^T, K decayed to the chunk end, and the chunk decay e^{G_C}.
    (Not mx.compile'd, and no concatenations: both measured slower on the CPU.)"""
    G = mx.cumsum(g, axis=-1)
    eG = mx.exp(G)[..., None]
    decay = causal_decay(G)
    kT = k.swapaxes(-1, -2)
    Tinv = unit_lower_inverse(mx.tril(k @ kT * decay * beta[..., None], -1))
    W = Tinv @ (k * (beta[..., None] * eG))
    U = Tinv @ (v * beta[..., None])
    kd = k * mx.exp(G[..., -1:] - G)[..., None]
    qg = mx.broadcast_to(q * eG, W.shape)
    return W, U, qg, (q @ kT) * decay, kd, mx.exp(G[..., -1:])[..., None]


def unit_lower_inverse(A):
    """(I + A)^-1 for strictly lower-triangular A [..., C, C].

    LAPACK's trtri on the CPU; elsewhere the doubling product
    (I - A)(I + A^2)(I + A^4)... in matmuls, exact because A^C = 0.
    """
    C = A.shape[-1]
    if mx.default_device() == mx.cpu and A.dtype == mx.float32:
        flat = (mx.eye(C, dtype=A.dtype) + A).reshape(-1, C, C)
        return mx.linalg.tri_inv(flat, upper=False, stream=mx.cpu).reshape(A.shape)
    return doubling_inverse(A)


def doubling_inverse(A):
    X = -A
    P = mx.eye(A.shape[-1], dtype=A.dtype) + X
    n = 2
    while n < A.shape[-1]:
        X = X @ X
        P = P + P @ X
        n *= 2
    return P
