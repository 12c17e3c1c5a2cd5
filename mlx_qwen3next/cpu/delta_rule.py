"""The delta rule's CPU policy: the chunked scan split over CPU streams, with LAPACK.

MLX's CPU backend runs a stream's ops in order on its own thread, and OpenBLAS
gains little from its threads on the chunked scan's small batched products; so
the heads are split into equal slices, one per CPU stream, each on one BLAS
thread. The chunk's (I + A)^-1 is LAPACK's trtri. Figures: bench/RESULTS.md,
"Delta rule".
"""

from __future__ import annotations

import mlx.core as mx

from ..kernels._prep import eval_if_eager, mask_padding
from ..kernels.chunked import CHUNK, GROUP, gated_delta_chunked
from ..kernels.decode import gated_delta_decode
from ..kernels.dispatch import Policy
from .blas import blas_threads
from .streams import on_stream, split_count


STREAMS_FROM = 2 * CHUNK  # tokens; bench/RESULTS.md, "Follow-up turns"


def tri_inverse(A):
    """(I + A)^-1 for strictly lower-triangular float32 A [..., C, C] (LAPACK)."""
    C = A.shape[-1]
    flat = (mx.eye(C, dtype=A.dtype) + A).reshape(-1, C, C)
    return mx.linalg.tri_inv(flat, upper=False, stream=mx.cpu).reshape(A.shape)


def chunked_over_streams(q, k, v, g, beta, state=None, lengths=None, streams=None):
    """gated_delta_chunked with the heads split over up to `streams` CPU streams
    (default one per core), a group of chunks at a time on every stream; under
    mx.compile or on one core, one stream. Calls shorter than STREAMS_FROM tokens (a
    follow-up turn's few new tokens) take the plain scan: there the split, its host
    sync and LAPACK cost more than they save."""
    if q.shape[1] < STREAMS_FROM:
        return gated_delta_chunked(q, k, v, g, beta, state, lengths)
    inverse = tri_inverse if q.dtype == mx.float32 else None
    n = split_count(q.shape[2], streams)
    inputs = [q, k, v, g, beta] + ([state] if state is not None else [])
    if n == 1 or not eval_if_eager(*inputs):  # inputs first, with every BLAS thread
        return gated_delta_chunked(q, k, v, g, beta, state, lengths, inverse=inverse)
    q, k, v, g, beta = mask_padding(q, k, v, g, beta, lengths)
    hk, hv, span = q.shape[2] // n, v.shape[2] // n, CHUNK * GROUP
    states = [None if state is None else state[:, i * hv:(i + 1) * hv] for i in range(n)]
    ys = []
    with blas_threads(1):
        for t0 in range(0, q.shape[1], span):
            t, outs = slice(t0, t0 + span), []
            for i in range(n):
                kh, vh = slice(i * hk, (i + 1) * hk), slice(i * hv, (i + 1) * hv)
                with on_stream(i, n):
                    y, states[i] = gated_delta_chunked(
                        q[:, t, kh], k[:, t, kh], v[:, t, vh], g[:, t, vh], beta[:, t, vh],
                        states[i], inverse=inverse)
                outs.append(y)
            ys.append(mx.concatenate(outs, axis=2))
            mx.eval(ys[-1], states)  # both streams at once, one group's intermediates
    return mx.concatenate(ys, axis=1), mx.concatenate(states, axis=1)


CPU_POLICY = Policy(gated_delta_decode, chunked_over_streams, "cpu")
