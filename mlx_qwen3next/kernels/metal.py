"""Custom Metal kernels (sources in metal/*.metal), built lazily on first use."""

from functools import cache
from pathlib import Path

import mlx.core as mx

_SOURCES = Path(__file__).parent / "metal"


def metal_usable(Dk):
    """The Metal kernels need a GPU default device and Dk a multiple of 32."""
    return mx.metal.is_available() and mx.default_device() == mx.gpu and Dk % 32 == 0


@cache
def _decode_kernel():
    return mx.fast.metal_kernel(
        name="qwen3next_gated_delta_decode",
        input_names=["q", "k", "v", "g", "beta", "state_in"],
        output_names=["y", "state_out"],
        source=(_SOURCES / "decode.metal").read_text(),
    )


def gated_delta_metal(q, k, v, g, beta, state):
    """Decode kernel; inputs already padding-masked, state float32 [B,Hv,Dv,Dk]."""
    B, T, Hk, Dk = q.shape
    Hv, Dv = v.shape[-2:]
    return _decode_kernel()(
        inputs=[q, k, v, g, beta, state],
        template=[("InT", q.dtype), ("Dk", Dk), ("Dv", Dv), ("Hk", Hk), ("Hv", Hv),
                  ("Steps", T)],
        grid=(32, Dv, B * Hv),
        threadgroup=(32, 4, 1),
        output_shapes=[(B, T, Hv, Dv), state.shape],
        output_dtypes=[q.dtype, mx.float32],
    )
