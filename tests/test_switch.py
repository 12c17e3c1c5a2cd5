"""The CPU paths of the experts against gather_mm in its plain x @ W.T form: the grouped
prefill (one matmul per expert) and the per-pair product with the weight on the left."""

import mlx.core as mx
import pytest

from mlx_qwen3next.model.switch import SwitchGLU, SwitchLinear


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


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_switch_linear_weight_on_the_left_equals_gather_mm(dtype):
    """SwitchLinear on the CPU computes each pair as (W_e @ x.T).T; check it against
    gather_mm(x, W.T) with x's batch broadcast against the indices (the plain decode
    path) and with explicit row indices, sorted or not (the lean decode and verify)."""
    mx.random.seed(1)
    lin = SwitchLinear(input_dims=48, output_dims=40, num_experts=16)
    lin.weight = lin.weight.astype(dtype)
    w32 = lin.weight.astype(mx.float32).swapaxes(-1, -2)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == mx.float32 else dict(atol=2e-2, rtol=2e-2)

    x = mx.random.normal((2, 5, 1, 1, 48)).astype(dtype)
    indices = mx.random.randint(0, 16, (2, 5, 4)).astype(mx.uint32)
    reference = mx.gather_mm(x.astype(mx.float32), w32, rhs_indices=indices)
    ours = lin(x, indices)
    assert ours.shape == reference.shape == (2, 5, 4, 1, 40) and ours.dtype == dtype
    assert mx.allclose(ours.astype(mx.float32), reference, **tol).item()

    rows = mx.random.normal((3, 1, 48)).astype(dtype)
    experts = mx.sort(mx.random.randint(0, 16, (9,)).astype(mx.uint32))
    token = mx.random.randint(0, 3, (9,)).astype(mx.uint32)
    reference = mx.gather_mm(rows.astype(mx.float32), w32, lhs_indices=token,
                             rhs_indices=experts)
    for sorted_indices in (False, True):
        ours = lin(rows, experts, sorted_indices=sorted_indices, lhs_indices=token)
        assert ours.shape == reference.shape == (9, 1, 40)
        assert mx.allclose(ours.astype(mx.float32), reference, **tol).item()
