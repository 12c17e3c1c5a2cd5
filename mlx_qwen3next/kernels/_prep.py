"""Input preparation shared by every delta-rule path."""

import mlx.core as mx


def accum_dtype(dtype):
    """float32 for half/bfloat16/float32 inputs; float64 stays float64 (tests)."""
    return mx.float64 if dtype == mx.float64 else mx.float32


def mask_padding(q, k, v, g, beta, lengths):
    """Zero the left-padded tokens of each row so they leave the state untouched.

    Row b keeps its last lengths[b] tokens. With beta = 0 and g = 0 a token
    neither writes nor decays the state; zeroing q, k, v too keeps garbage
    (even NaN) in padded slots from leaking into the products.
    """
    if lengths is None:
        return q, k, v, g, beta
    T = q.shape[1]
    start = T - mx.array(lengths).astype(mx.int32).reshape(-1, 1)
    valid = mx.arange(T)[None, :] >= start  # [B, T]
    vt = valid[..., None]
    zero = lambda x, m: mx.where(m, x, mx.zeros((), x.dtype))
    return (zero(q, vt[..., None]), zero(k, vt[..., None]), zero(v, vt[..., None]),
            zero(g, vt), zero(beta, vt))


def init_state(state, B, Hv, Dv, Dk, dtype):
    if state is None:
        return mx.zeros((B, Hv, Dv, Dk), dtype=dtype)
    return state.astype(dtype)


def causal_decay(G):
    """exp(G_i - G_j) for j <= i, else 0, from cumulative log-decays G [..., C].

    Built from the difference, never exp(G_i) / exp(G_j), which would
    overflow for strong decays; clamping at 0 keeps the masked upper half
    finite (G never increases, so the kept half is <= 0 anyway)."""
    C = G.shape[-1]
    causal = mx.tril(mx.ones((C, C), dtype=G.dtype))
    return mx.exp(mx.minimum(G[..., :, None] - G[..., None, :], 0)) * causal


def eval_if_eager(*arrays) -> bool:
    """mx.eval, except while mx.compile / vmap trace (nothing to free then).
    Returns whether it evaluated."""
    try:
        mx.eval(*arrays)
    except ValueError as e:
        if "function transformations" not in str(e):
            raise
        return False
    return True
