"""The CPU blocked causal attention against MLX's fused scaled_dot_product_attention."""

import pytest

import mlx.core as mx
from mlx_qwen3next.model.blocked_attention import blocked_causal_attention


@pytest.mark.parametrize("L,cached,block", [(600, 0, 256), (300, 77, 128), (64, 5, 64)])
def test_blocked_equals_fused(L, cached, block):
    mx.random.seed(L)
    B, H, Hkv, D = 2, 8, 2, 32
    q = mx.random.normal((B, H, L, D))
    k = mx.random.normal((B, Hkv, cached + L, D))
    v = mx.random.normal((B, Hkv, cached + L, D))
    ours = blocked_causal_attention(q, k, v, D**-0.5, block=block)
    ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=D**-0.5, mask="causal")
    assert ours.shape == ref.shape
    assert mx.allclose(ours, ref, atol=2e-5, rtol=2e-5).item()
