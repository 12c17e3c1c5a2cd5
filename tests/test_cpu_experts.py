"""The CPU experts (cpu/experts.py) against the plain SwitchGLU / SwitchLinear they replace:
the grouped prefill (one matmul per expert) and the per-pair weight-on-the-left product."""

import mlx.core as mx
import pytest

from mlx_qwen3next.cpu.experts import CpuSwitchLinear, GroupedSwitchGLU
from mlx_qwen3next.cpu.specialise import swapped
from mlx_qwen3next.model.switch import SwitchGLU, SwitchLinear

pytestmark = pytest.mark.cpu_only


def test_grouped_experts_equal_the_plain_module():
    mx.random.seed(0)
    plain = SwitchGLU(hidden=32, intermediate=24, num_experts=8)
    grouped = swapped(plain)
    for name in ("gate_proj", "up_proj", "down_proj"):
        grouped[name] = swapped(plain[name])
    assert isinstance(grouped, GroupedSwitchGLU) and isinstance(grouped.up_proj, CpuSwitchLinear)
    x = mx.random.normal((3, 40, 32))
    indices = mx.argsort(mx.random.normal((3, 40, 8)), axis=-1)[..., :3]  # distinct top-3
    want = plain(x, indices)
    assert want.shape == (3, 40, 3, 32)
    assert mx.allclose(grouped(x, indices), want, atol=1e-5, rtol=1e-5).item()
    few = indices[:1, :2]  # under SORT_FROM pairs: the gather path
    assert mx.allclose(grouped(x[:1, :2], few), plain(x[:1, :2], few), atol=1e-5).item()


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_weight_on_the_left_equals_gather_mm(dtype):
    """Each pair as (W_e @ x.T).T, x's batch broadcast against the indices, against
    gather_mm(x, W.T) in float32 (MLX's CPU gather_mm has no bf16)."""
    mx.random.seed(1)
    lin = SwitchLinear(input_dims=48, output_dims=40, num_experts=16)
    lin.weight = lin.weight.astype(dtype)
    cpu = swapped(lin)
    w32 = lin.weight.astype(mx.float32).swapaxes(-1, -2)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == mx.float32 else dict(atol=2e-2, rtol=2e-2)
    x = mx.random.normal((2, 5, 1, 1, 48)).astype(dtype)
    indices = mx.random.randint(0, 16, (2, 5, 4)).astype(mx.uint32)
    want = mx.gather_mm(x.astype(mx.float32), w32, rhs_indices=indices)
    got = cpu(x, indices)
    assert got.shape == want.shape == (2, 5, 4, 1, 40) and got.dtype == dtype
    assert mx.allclose(got.astype(mx.float32), want, **tol).item()
    rows = mx.random.normal((9, 1, 1, 48)).astype(dtype)  # prefill-sized: the plain gather
    sorted_idx = mx.sort(mx.random.randint(0, 16, (9, 1)).astype(mx.uint32), axis=0)
    want = mx.gather_mm(rows.astype(mx.float32), w32, rhs_indices=sorted_idx)
    assert mx.allclose(cpu(rows, sorted_idx, True).astype(mx.float32), want, **tol).item()
