"""The CPU's float32 quantized products (cpu/quantized.py) against the plain quantized
modules they stand in for and against the dequantized weight in float64."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_qwen3next.cpu.quantized import CpuQuantizedLinear, CpuQuantizedSwitchLinear
from mlx_qwen3next.cpu.specialise import specialise, swapped, unspecialise
from mlx_qwen3next.kernels import dispatch
from mlx_qwen3next.model.switch import QuantizedSwitchLinear, SwitchLinear
from test_kernels import relative_error

pytestmark = pytest.mark.cpu_only


def quantized(module):
    """`module` in bf16, as a converted checkpoint has it, then quantized to 4 bits."""
    module.set_dtype(mx.bfloat16)
    return module.to_quantized(group_size=64, bits=4)


def exact_weight(m) -> np.ndarray:
    f32 = lambda a: a.astype(mx.float32)
    w = mx.dequantize(m.weight, f32(m.scales), f32(m.biases), m.group_size, m.bits)
    return np.asarray(w, np.float64)


@pytest.mark.parametrize("rows", [1, 2, 40])
@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float32])
def test_quantized_linear_in_float32_equals_the_plain_one(rows, dtype):
    """Decode-sized rows take the quantized product, more rows the dequantized weight:
    both in the plain module's dtype, as close to the exact product as the output's
    rounding allows, and so at least as close as the plain module (MLX's CPU product on
    bf16 activations is off by ~1e-2 or more)."""
    plain = quantized(nn.Linear(128, 96, bias=True))
    cpu = swapped(plain)
    assert type(cpu) is CpuQuantizedLinear
    x = mx.random.normal((2, rows, 128), key=mx.random.key(rows)).astype(dtype)
    got, want = cpu(x), plain(x)
    assert got.dtype == want.dtype == dtype
    exact = np.asarray(x.astype(mx.float32), np.float64) @ exact_weight(plain).T
    exact += np.asarray(plain.bias.astype(mx.float32), np.float64)
    err, plain_err = (relative_error(y, mx.array(exact)) for y in (got, want))
    assert err <= (5e-3 if dtype == mx.bfloat16 else 1e-5) and err <= plain_err + 1e-6


@pytest.mark.parametrize("sort", [False, True])
def test_quantized_switch_linear_in_float32_equals_the_plain_one(sort):
    plain = quantized(SwitchLinear(128, 64, 8))
    cpu = swapped(plain)
    assert type(cpu) is CpuQuantizedSwitchLinear
    rng = np.random.default_rng(0)
    idx = mx.array(np.sort(rng.integers(0, 8, 24)) if sort else rng.integers(0, 8, 24),
                   mx.uint32)
    x = mx.random.normal((24, 1, 128), key=mx.random.key(1)).astype(mx.bfloat16)
    got, want = cpu(x, idx, sort), plain(x, idx, sort)
    assert got.dtype == mx.bfloat16
    w = exact_weight(plain)  # [experts, out, in]
    xs = np.asarray(x.astype(mx.float32), np.float64)[:, 0]
    exact = np.stack([w[e] @ xs[i] for i, e in enumerate(np.asarray(idx))])[:, None]
    err, plain_err = (relative_error(y, mx.array(exact)) for y in (got, want))
    assert err <= 5e-3 and err <= plain_err + 1e-6


def test_specialise_swaps_quantized_modules_in_lists_too_and_unspecialise_undoes_it():
    model = nn.Sequential(quantized(nn.Linear(64, 64)), quantized(SwitchLinear(64, 64, 4)))
    with dispatch.using(dispatch.policy()):  # specialise also sets the delta-rule policy
        specialise(model)
    assert [type(m) for m in model.layers] == [CpuQuantizedLinear, CpuQuantizedSwitchLinear]
    unspecialise(model)
    assert [type(m) for m in model.layers] == [nn.QuantizedLinear, QuantizedSwitchLinear]


@pytest.mark.parametrize("rows", [1, 40])
def test_a_mode_with_coded_scales_keeps_them(rows):
    """mxfp4's scales are uint8 exponents: both paths use them as they are."""
    linear = nn.Linear(128, 96, bias=False)
    linear.set_dtype(mx.bfloat16)
    plain = linear.to_quantized(group_size=32, bits=4, mode="mxfp4")
    cpu = swapped(plain)
    x = mx.random.normal((1, rows, 128), key=mx.random.key(rows)).astype(mx.bfloat16)
    w = mx.dequantize(plain.weight, plain.scales, None, 32, 4, mode="mxfp4")
    exact = np.asarray(x.astype(mx.float32), np.float64) @ np.asarray(
        w.astype(mx.float32), np.float64).T
    got, want = cpu(x), plain(x)
    assert got.dtype == want.dtype == mx.bfloat16
    err, plain_err = (relative_error(y, mx.array(exact)) for y in (got, want))
    assert err <= 5e-3 and err <= plain_err + 1e-6
