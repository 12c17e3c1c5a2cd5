"""The CPU polynomial SiLU (cpu/activations.py) against float64, and the malloc setting."""

import os
import subprocess
import sys

import mlx_qwen3next  # noqa: F401
import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_qwen3next.cpu import activations

pytestmark = pytest.mark.cpu_only


def wide_inputs(n=200_000, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 3, n), rng.uniform(-120, 120, n),
                        [0.0, -0.0, 1e-30, -1e-30, 87.0, -87.0, 88.7, -88.7, 1e4, -1e4]])
    return x.astype(np.float32)


def float64_sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def test_float32_fast_path_matches_float64(name="silu"):
    x = wide_inputs()
    want = float64_sigmoid(x) * (x.astype(np.float64) if name == "silu" else 1.0)
    got = np.array(getattr(activations, name)(mx.array(x))).astype(np.float64)
    scale = np.maximum(np.abs(want), 1e-30)
    assert np.max(np.abs(got - want) / scale) < 1e-6
    # MLX's own ops, for scale: the fast path is at least as accurate
    mine = np.max(np.abs(got - want) / scale)
    theirs_fn = mx.sigmoid if name == "sigmoid" else nn.silu
    theirs = np.array(theirs_fn(mx.array(x))).astype(np.float64)
    assert mine <= max(np.max(np.abs(theirs - want) / scale), 1e-6)


def test_poly_exp_accuracy_over_its_range():
    x = np.linspace(-86.9, 88.3, 100_001).astype(np.float32)
    got = np.array(activations.poly_exp(mx.array(x))).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 5e-7


@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16])
def test_half_inputs_round_like_mlx(dtype):
    x = mx.array(wide_inputs(20_000)).astype(dtype)
    for ours, theirs in ((activations.silu, nn.silu), (activations.PolySiLU(), nn.silu)):
        a, b = ours(x), theirs(x)
        assert a.dtype == dtype
        assert mx.allclose(a.astype(mx.float32), b.astype(mx.float32), rtol=1e-2, atol=1e-3).item()


def test_float64_and_nan_use_plain_semantics():
    x = mx.array([-3.0, 0.5, 7.0], dtype=mx.float64)
    assert mx.array_equal(activations.silu(x), nn.silu(x)).item()
    y = activations.silu(mx.array([float("nan"), 1.0]))
    assert np.isnan(np.array(y)[0])


def test_malloc_setting_is_on_by_default_and_can_be_turned_off():
    code = "import mlx_qwen3next.cpu.malloc as m, mlx_qwen3next; print(m.malloc_tuned())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "MLX_QWEN3NEXT_NO_MALLOPT": "1"})
    expected_on = "True" if sys.platform.startswith("linux") else "False"
    assert on.stdout.strip() == expected_on, on.stderr
    assert off.stdout.strip() == "False", off.stderr
