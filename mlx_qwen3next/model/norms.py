"""The two RMSNorms of Qwen3-Next.

The checkpoint's zero-centred norms (input/post-attention layernorms, the final
norm, q_norm/k_norm and every MTP norm) are applied as x_normed * (1 + w). We
add the 1 once at load time (as mlx-lm does), in float32, and keep the weight in
float32: near 1.0, bf16's step is 2^-7, so 1 + w rounded to bf16 loses most of w
(transformers computes 1 + w.float() too). `RMSNorm` then returns the input's
dtype, so a float32 weight does not turn bf16 activations into float32. The
DeltaNet output norm is different: plain w, then gated by silu(z).
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


class RMSNorm(nn.Module):
    """rms_norm(x) * weight, in x's dtype whatever the weight's."""

    def __init__(self, dims: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = mx.ones((dims,))

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, self.weight, self.eps).astype(x.dtype)


class GatedRMSNorm(nn.Module):
    """rms_norm(x) * w * silu(z), the gate computed in float32, in z's shape (the heads
    of x [..., heads, dims] side by side in z [..., heads * dims])."""

    def __init__(self, dims: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = mx.ones((dims,))
        self.act = nn.SiLU()

    def __call__(self, x: mx.array, z: mx.array) -> mx.array:
        y = mx.fast.rms_norm(x, self.weight, self.eps)
        gate = self.act(z.astype(mx.float32))
        return (y.astype(mx.float32).reshape(z.shape) * gate).astype(x.dtype)
