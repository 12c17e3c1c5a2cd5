"""The CPU prefill path of the experts (one matmul per expert) against gather_mm."""

import mlx.core as mx

from mlx_qwen3next.model.switch import SwitchGLU


def test_grouped_experts_equal_gather_mm():
    mx.random.seed(0)
    glu = SwitchGLU(hidden=32, intermediate=24, num_experts=8)
    x = mx.random.normal((3, 40, 32))
    indices = mx.argsort(mx.random.normal((3, 40, 8)), axis=-1)[..., :3]  # distinct top-3
    grouped = glu._grouped(x, indices)
    reference = mx.gather_mm(
        mx.expand_dims(x, (-2, -3)), glu.gate_proj.weight.swapaxes(-1, -2), rhs_indices=indices
    )
    up = mx.gather_mm(mx.expand_dims(x, (-2, -3)), glu.up_proj.weight.swapaxes(-1, -2),
                      rhs_indices=indices)
    h = (reference * mx.sigmoid(reference)) * up
    reference = mx.gather_mm(h, glu.down_proj.weight.swapaxes(-1, -2),
                             rhs_indices=indices).squeeze(-2)
    assert grouped.shape == reference.shape == (3, 40, 3, 32)
    assert mx.allclose(grouped, reference, atol=1e-5, rtol=1e-5).item()
    # and the module picks the grouped path for many tokens with the same result
    assert mx.allclose(glu(x, indices), reference, atol=1e-5, rtol=1e-5).item()
