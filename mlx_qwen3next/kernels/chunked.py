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
BLOCK = 8  # sub-block of the chunk for the factorised decay (see blocked_decay)


def gated_delta_chunked(q, k, v, g, beta, state=None, lengths=None, *,
                        chunk=CHUNK, group=GROUP, inverse=None):
    """Same contract as gated_delta_reference; any T, left-padded rows via lengths.
    `inverse(A)` = (I + A)^-1 for strictly lower A (default: block_inverse)."""
    q, k, v, g, beta = mask_padding(q, k, v, g, beta, lengths)
    B, T, Hk, Dk = q.shape
    Hv, Dv = v.shape[-2:]
    out_dtype, acc = q.dtype, accum_dtype(q.dtype)
    C, span = min(chunk, T), min(chunk, T) * group
    H = init_state(state, B, Hv, Dv, Dk, acc).swapaxes(-1, -2).reshape(B * Hv, Dk, Dv)
    ys = []
    for t0 in range(0, T, span):
        t = slice(t0, t0 + span)
        y, H = _group(q[:, t].astype(acc), k[:, t].astype(acc), v[:, t].astype(acc),
                      g[:, t].astype(acc), beta[:, t].astype(acc), H, C,
                      inverse or block_inverse)
        ys.append(y.astype(out_dtype))
        if T > span:  # bound memory: one group's intermediates at a time
            eval_if_eager(ys[-1], H)
    y = ys[0] if len(ys) == 1 else mx.concatenate(ys, axis=1)
    return y, H.reshape(B, Hv, Dk, Dv).swapaxes(-1, -2)


def _group(q, k, v, g, beta, H, C, inverse):
    """Tokens of a few chunks: [B, t, heads, ...] in, y [B, t, Hv, Dv] out."""
    B, t, Hk, Dk = q.shape
    Hv, Dv = v.shape[-2:]
    pad = -t % C
    n = (t + pad) // C
    qc, kc = (_split(x[:, :, :, None], pad, C) for x in (q, k))  # [n,B,Hk,1,C,Dk]
    vc = _split(v.reshape(B, t, Hk, -1, Dv), pad, C)  # [n,B,Hk,r,C,Dv]
    gc, bc = (_split(x.reshape(B, t, Hk, -1), pad, C) for x in (g, beta))  # [n,B,Hk,r,C]
    QW, U, Aqk, kd, gC = (x.reshape(n, B * Hv, *x.shape[-2:])
                          for x in _intra(qc, kc, vc, gc, bc, inverse))
    qH, vn = [], []
    for i in range(n):  # the only sequential part: carry the state
        qwH = QW[i] @ H  # [Q e^G ; W] H in one product
        qH.append(qwH[:, :C])
        vn.append(U[i] - qwH[:, C:])
        H = H * gC[i] + kd[i].swapaxes(-1, -2) @ vn[-1]
    y = mx.stack(qH) + Aqk @ mx.stack(vn)  # the in-chunk part, batched after the loop
    y = y.reshape(n, B, Hv, C, Dv).transpose(1, 0, 3, 2, 4)
    return y.reshape(B, n * C, Hv, Dv)[:, :t], H


def _split(x, pad, C):
    """[B, t, Hk, r, ...] -> [n, B, Hk, r, C, ...], zero-padded at the end of t."""
    if pad:
        x = mx.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    B, tp = x.shape[:2]
    x = x.reshape(B, tp // C, C, *x.shape[2:])
    return x.transpose(1, 0, 3, 4, 2, *range(5, x.ndim))


def _intra(q, k, v, g, beta, inverse):
    """Everything that is parallel over chunks: [Q e^G ; W] stacked by rows, U,
    the causal decayed Q K^T, K decayed to the chunk end, and the chunk decay
    e^{G_C}. (Not mx.compile'd: measured slower on the CPU.)"""
    C = g.shape[-1]
    G = mx.cumsum(g, axis=-1)
    eG = mx.exp(G)[..., None]
    decay = blocked_decay(G) if C % BLOCK == 0 and C > BLOCK else causal_decay(G)
    kT = k.swapaxes(-1, -2)
    strict = 1 - mx.eye(C, dtype=decay.dtype)  # a product, not mx.tril: finite inputs
    Tinv = inverse(k @ kT * (decay * strict) * beta[..., None])
    W = Tinv @ (k * (beta[..., None] * eG))
    U = Tinv @ (v * beta[..., None])
    kd = k * mx.exp(G[..., -1:] - G)[..., None]
    QW = mx.concatenate([mx.broadcast_to(q * eG, W.shape), W], axis=-2)
    return QW, U, (q @ kT) * decay, kd, mx.exp(G[..., -1:])[..., None]


def blocked_decay(G, block=BLOCK):
    """causal_decay(G) with ~C/block + block exps per row instead of C.

    The C x C decay is otherwise the costliest elementwise op of a chunk.
    For j before the block of i (which starts at e),
    exp(G_i - G_j) = exp(G_i - G_e) * exp(G_e - G_j): both factors are <= 1
    (G never increases), so nothing overflows; a product that underflows is
    below float32's range anyway. Within a block: the plain masked exp.
    """
    *lead, C = G.shape
    nb = C // block
    Gb = G.reshape(*lead, nb, block)
    start = Gb[..., :1]  # [..., nb, 1]: G at each block's first token
    a = mx.exp(Gb - start).reshape(*lead, C, 1)  # exp(G_i - G_e(i))
    earlier = mx.arange(C)[None, :] < mx.arange(0, C, block)[:, None]  # [nb, C]
    b = mx.exp(mx.minimum(start - G[..., None, :], 0)) * earlier  # [..., nb, C]
    off = a * mx.repeat(b, block, axis=-2)  # [..., C, C]
    inside = causal_decay(Gb)  # [..., nb, block, block]
    eye = mx.eye(nb, dtype=G.dtype)[:, None, :, None]
    diag = (inside[..., :, :, None, :] * eye).reshape(*lead, C, C)
    return off + diag


def block_inverse(A):
    """(I + A)^-1 for strictly lower-triangular A [..., C, C], by doubling solved
    diagonal blocks: if T11 and T22 invert the two halves of a block, the block's
    inverse is [[T11, 0], [-T22 A21 T11, T22]]. Every product is of true inverse
    blocks, so the error stays that of forward substitution. (The Neumann product
    (I - A)(I + A^2)(I + A^4).. is exact in theory but not in float32: with alike keys
    and weak decays the powers of A grow like binomials, ~1e16 at C = 64, before they
    cancel.) C is padded to a power of two."""
    *lead, _, C = A.shape
    size = 1 << (C - 1).bit_length()
    if size != C:
        A = mx.pad(A, [(0, 0)] * len(lead) + [(0, size - C), (0, size - C)])
    T = mx.ones((*lead, size, 1, 1), A.dtype)  # the solved 1 x 1 diagonal blocks
    s = 1
    while s < size:
        n = size // (2 * s)
        blocks = mx.diagonal(A.reshape(*lead, n, 2 * s, n, 2 * s), axis1=-4, axis2=-2)
        A21 = mx.moveaxis(blocks, -1, -3)[..., s:, :s]  # [..., n, s, s]
        T = T.reshape(*lead, n, 2, s, s)
        T11, T22 = T[..., 0, :, :], T[..., 1, :, :]
        top = mx.concatenate([T11, mx.zeros_like(T11)], axis=-1)
        bottom = mx.concatenate([-(T22 @ A21 @ T11), T22], axis=-1)
        T = mx.concatenate([top, bottom], axis=-2)
        s *= 2
    T = T.reshape(*lead, size, size)
    return T if size == C else T[..., :C, :C]
