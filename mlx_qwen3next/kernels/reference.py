"""Token-by-token gated delta rule: the oracle every fast path is tested against.

Per token t and value head h (key head h // (Hv / Hk)), with S of shape [Dv, Dk]:
    S = S * exp(g_t);  d = (v_t - S k_t) * beta_t;  S = S + outer(d, k_t);  o_t = S q_t
"""

import mlx.core as mx

from ._prep import accum_dtype, init_state, mask_padding


def gated_delta_reference(q, k, v, g, beta, state=None, lengths=None):
    """q, k [B,T,Hk,Dk]; v [B,T,Hv,Dv]; g, beta [B,T,Hv]; state [B,Hv,Dv,Dk].

    Returns (y [B,T,Hv,Dv] in q's dtype, final state in float32, or float64
    when the inputs are float64).
    """
    B, T, Hk, Dk = q.shape
    Hv, Dv = v.shape[-2:]
    out_dtype, acc = q.dtype, accum_dtype(q.dtype)
    q, k, v, g, beta = (x.astype(acc) for x in mask_padding(q, k, v, g, beta, lengths))
    q, k = (mx.repeat(x, Hv // Hk, axis=2) for x in (q, k))
    S = init_state(state, B, Hv, Dv, Dk, acc)
    ys = []
    for t in range(T):
        S = S * mx.exp(g[:, t])[..., None, None]
        kv = (S @ k[:, t, :, :, None])[..., 0]
        d = (v[:, t] - kv) * beta[:, t, :, None]
        S = S + d[..., :, None] * k[:, t, :, None, :]
        ys.append((S @ q[:, t, :, :, None])[..., 0])
        if t % 64 == 63:  # keep the lazy graph short
            mx.eval(S, ys)
    return mx.stack(ys, axis=1).astype(out_dtype), S
