"""The two RMSNorms of Qwen3-Next.

The checkpoint's zero-centred norms (input/post-attention layernorms, the final
norm, q_norm/k_norm and every MTP norm) are applied as x_normed * (1 + w). We
add the 1 once at load time (as mlx-lm does), so at run time they are plain
`nn.RMSNorm`s. The DeltaNet output norm is different: plain w, then gated by
silu(z).
"""

import mlx.core as mx
import mlx.nn as nn

# Suffixes of the checkpoint's zero-centred norm weights (stored as w, used as 1 + w).
ZERO_CENTRED_SUFFIXES = (
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    "model.norm.weight",
    "q_norm.weight",
    "k_norm.weight",
    "pre_fc_norm_embedding.weight",
    "pre_fc_norm_hidden.weight",
    "mtp.norm.weight",
)


def is_zero_centred(name: str) -> bool:
    return name.endswith(ZERO_CENTRED_SUFFIXES)


class GatedRMSNorm(nn.Module):
    """rms_norm(x) * w * silu(z), the gate computed in float32."""

    def __init__(self, dims: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = mx.ones((dims,))
        self.act = nn.SiLU()

    def __call__(self, x: mx.array, z: mx.array) -> mx.array:
        y = mx.fast.rms_norm(x, self.weight, self.eps)
        gate = self.act(z.astype(mx.float32))
        return (y.astype(mx.float32) * gate).astype(x.dtype)
