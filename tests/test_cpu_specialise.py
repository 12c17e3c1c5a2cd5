"""The CPU load-time step (cpu/specialise.py) and the CPU delta-rule policy, against the
plain model and the plain kernels they stand in for."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_qwen3next import load_model
from mlx_qwen3next.cpu import blas
from mlx_qwen3next.cpu.activations import PolySiLU
from mlx_qwen3next.cpu.attention import BlockedCausalAttention
from mlx_qwen3next.cpu.delta_rule import (
    CPU_POLICY, STREAMS_FROM, chunked_over_streams, tri_inverse,
)
from mlx_qwen3next.cpu.experts import GroupedSwitchGLU
from mlx_qwen3next.cpu.products import BlockedLinear
from mlx_qwen3next.kernels import dispatch
from mlx_qwen3next.kernels.chunked import block_inverse, gated_delta_chunked
from mlx_qwen3next.kernels.reference import gated_delta_reference
from mlx_qwen3next.model.attention import Attention
from test_kernels import assert_close, make_inputs, relative_error

pytestmark = pytest.mark.cpu_only


@pytest.mark.parametrize("T", [STREAMS_FROM + 1, 1000])
@pytest.mark.parametrize("ratio", [1, 4])
def test_chunked_over_streams_equals_one_stream(T, ratio):
    """The head split (one slice per CPU stream, one BLAS thread each) is the same
    computation as the plain scan, padded rows included."""
    q, k, v, g, beta, state = make_inputs(T, ratio, B=2, seed=T)
    lengths = mx.array([T, T - 5])
    one = gated_delta_chunked(q, k, v, g, beta, state, lengths)
    two = chunked_over_streams(q, k, v, g, beta, state, lengths, streams=2)
    assert_close(two, one, 1e-6)
    assert_close(two, gated_delta_reference(q, k, v, g, beta, state, lengths), 1e-5)


def test_chunked_over_streams_under_compile():
    args = make_inputs(130, seed=3)
    compiled = mx.compile(lambda *a: chunked_over_streams(*a, streams=2))
    assert_close(compiled(*args), gated_delta_reference(*args), 1e-5)


def test_tri_inverse_equals_block_inverse():
    A = mx.tril(0.3 * mx.random.normal((5, 64, 64)), -1)
    assert relative_error(tri_inverse(A), block_inverse(A)) <= 1e-5


def test_blas_threads_restores_the_count():
    get = getattr(blas._lib, "openblas_get_num_threads", None)
    if get is None:
        pytest.skip("not OpenBLAS")
    before = get()
    with blas.blas_threads(1):
        assert get() == 1
    assert get() == before


def test_specialised_model_equals_the_plain_one(make_checkpoint):
    """Every swap applied (and nothing left plain); prefill, decode steps and a verify give
    the plain model's logits."""
    path = make_checkpoint()
    plain = load_model(path, specialise=False)
    with dispatch.using(dispatch.PLAIN):
        cpu = load_model(path)
        assert dispatch.policy() is CPU_POLICY
    kinds = {type(m) for m in cpu.modules()}
    assert {BlockedLinear, GroupedSwitchGLU, PolySiLU, BlockedCausalAttention} <= kinds
    assert not kinds & {nn.Linear, nn.SiLU, Attention}
    ids = np.random.default_rng(3).integers(0, 500, (1, 80))
    logits = {}
    for model, policy in ((plain, dispatch.PLAIN), (cpu, CPU_POLICY)):
        with dispatch.using(policy):
            cache = model.make_cache()
            out = [model(mx.array(ids[:, :70]), cache)]
            out += [model(mx.array(ids[:, t:t + 1]), cache) for t in range(70, 75)]
            cache.keep_steps(True)
            out.append(model(mx.array(ids[:, 75:]), cache))
            cache.keep_steps(False)
            logits[policy.name] = mx.concatenate(out, axis=1)
    assert relative_error(logits["cpu"], logits["ops"]) <= 1e-5
