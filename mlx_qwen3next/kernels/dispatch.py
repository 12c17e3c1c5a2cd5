"""gated_delta: the one entry point; picks the path by length and backend.

Measured on a 2-core CPU with OpenBLAS (bench/RESULTS.md, "Delta rule"):
the few-token ops path beats mx.fast.gated_delta_update at every T <= 8
and the chunked path wins by far beyond. On Metal the decode kernel is used
once it has matched the ops path on its first call.
"""

import mlx.core as mx

from ._prep import init_state, mask_padding
from .chunked import gated_delta_chunked
from .decode import MAX_T, gated_delta_decode
from .metal import gated_delta_metal, metal_usable
from .selfcheck import checked_call


def gated_delta(q, k, v, g, beta, state=None, lengths=None):
    """Gated delta rule over T tokens.

    q, k [B,T,Hk,Dk] (L2-normalised, q scaled); v [B,T,Hv,Dv]; g [B,T,Hv]
    log-space decay; beta [B,T,Hv]; state [B,Hv,Dv,Dk] float32 or None;
    lengths [B] valid tokens per left-padded row or None.
    Returns y [B,T,Hv,Dv] in q's dtype and the new float32 state.
    """
    B, T, Hk, Dk = q.shape
    if T > MAX_T:
        return gated_delta_chunked(q, k, v, g, beta, state, lengths)
    if not metal_usable(Dk):
        return gated_delta_decode(q, k, v, g, beta, state, lengths)
    Hv, Dv = v.shape[-2:]
    q, k, v, g, beta = mask_padding(q, k, v, g, beta, lengths)
    state = init_state(state, B, Hv, Dv, Dk, mx.float32)
    key = (q.dtype, Dk, Dv, Hk, Hv, T)
    tol = 1e-4 if q.dtype == mx.float32 else 2e-2
    return checked_call("metal_decode", key, gated_delta_metal, gated_delta_decode,
                        q, k, v, g, beta, state, tol=tol)
