"""Every delta-rule path against the token-by-token oracle (and the oracle
against transformers)."""

import time

import mlx_qwen3next  # noqa: F401  (loads OpenBLAS before mlx.core)
import mlx.core as mx
import numpy as np
import pytest

from mlx_qwen3next.kernels import dispatch, gated_delta, gated_delta_steps
from mlx_qwen3next.kernels._prep import causal_decay
from mlx_qwen3next.kernels.chunked import block_inverse, blocked_decay, gated_delta_chunked
from mlx_qwen3next.kernels.decode import MAX_T, gated_delta_decode, state_after
from mlx_qwen3next.kernels.reference import gated_delta_reference

DK, DV, HK = 32, 48, 2


def make_inputs(T, ratio=2, B=2, dtype=mx.float32, seed=0, Dk=DK, Dv=DV):
    mx.random.seed(seed)
    Hv = HK * ratio
    unit = lambda x: x / mx.linalg.norm(x, axis=-1, keepdims=True)
    q = unit(mx.random.normal((B, T, HK, Dk))) * Dk**-0.5
    k = unit(mx.random.normal((B, T, HK, Dk)))
    v = mx.random.normal((B, T, Hv, Dv))
    g = -mx.exp(mx.random.normal((B, T, Hv)) - 2.0)  # decays from ~1 to strong
    beta = mx.sigmoid(mx.random.normal((B, T, Hv)))
    state = 0.3 * mx.random.normal((B, Hv, Dv, Dk))
    return [x.astype(dtype) for x in (q, k, v, g, beta)] + [state]


def relative_error(a, b):
    a, b = (np.asarray(x.astype(mx.float32), np.float64) for x in (a, b))
    return float(np.linalg.norm(a - b) / (np.linalg.norm(b) + 1e-30))


def assert_close(got, want, tol):
    for a, b in zip(got, want):
        assert a.shape == b.shape
        assert relative_error(a, b) <= tol


@pytest.mark.parametrize("T", [1, 7, 63, 64, 65, 200, 1000])
@pytest.mark.parametrize("ratio", [1, 2, 4])
def test_chunked_matches_reference_with_state(T, ratio):
    args = make_inputs(T, ratio, seed=T + ratio)
    assert_close(gated_delta_chunked(*args), gated_delta_reference(*args), 1e-5)


@pytest.mark.parametrize("T", [1, 7, 63, 64, 65, 200, 1000])
def test_chunked_matches_reference_from_zero_state(T):
    args = make_inputs(T, seed=T)[:5]
    y, state = gated_delta_chunked(*args)
    assert state.dtype == mx.float32
    assert_close((y, state), gated_delta_reference(*args), 1e-5)


@pytest.mark.parametrize("T", [1, 7, 65, 200, 1000])
def test_chunked_matches_reference_bfloat16(T):
    args = make_inputs(T, ratio=4, dtype=mx.bfloat16, seed=T)
    y, state = gated_delta_chunked(*args)
    assert y.dtype == mx.bfloat16 and state.dtype == mx.float32
    assert_close((y, state), gated_delta_reference(*args), 2e-2)


@pytest.mark.parametrize("T", range(1, MAX_T + 1))
def test_decode_matches_reference(T):
    args = make_inputs(T, ratio=2 if T % 2 else 4, seed=T)
    assert_close(gated_delta_decode(*args), gated_delta_reference(*args), 1e-5)


@pytest.mark.parametrize("T", [1, 3, MAX_T, MAX_T + 1, 130])
def test_gated_delta_matches_reference(T):
    args = make_inputs(T, seed=T)
    assert_close(gated_delta(*args), gated_delta_reference(*args), 1e-5)


@pytest.mark.parametrize("path", [gated_delta, gated_delta_chunked, gated_delta_decode])
@pytest.mark.parametrize("T", [5, 150])
def test_left_padded_batch_equals_rows_alone(path, T):
    q, k, v, g, beta, state = make_inputs(T, B=3, seed=T)
    lengths = [T, T - 3, 1]
    pad = mx.arange(T)[None, :, None, None] < (T - mx.array(lengths))[:, None, None, None]
    v = mx.where(pad, mx.nan, v)  # garbage in padded slots must not leak
    y, final = path(q, k, v, g, beta, state, mx.array(lengths))
    for b, L in enumerate(lengths):
        row = [x[b:b + 1, T - L:] for x in (q, k, v, g, beta)] + [state[b:b + 1]]
        y_row, s_row = gated_delta_reference(*row)
        assert_close((y[b:b + 1, T - L:], final[b:b + 1]), (y_row, s_row), 1e-5)
        assert mx.all(y[b, :T - L] == 0).item()


def test_reference_matches_transformers_recurrence():
    torch = pytest.importorskip("torch")
    modeling = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")
    with mx.stream(mx.cpu):  # float64: the CPU only
        q, k, v, g, beta, state = (x.astype(mx.float64) for x in make_inputs(37, ratio=2))
        y, final = gated_delta_reference(q, k, v, g, beta, state)
    assert y.dtype == mx.float64
    t = lambda x: torch.from_numpy(np.array(x))
    # transformers scales q by Dk^-0.5 itself, keeps the state as [Dk, Dv], and
    # computes in float32 whatever it is given.
    y_hf, s_hf = modeling.torch_recurrent_gated_delta_rule(
        t(q * DK**0.5), t(k), t(v), t(g), t(beta), initial_state=t(state.swapaxes(-1, -2)),
        output_final_state=True, use_qk_l2norm_in_kernel=False)
    assert_close((y, final.swapaxes(-1, -2)),
                 (mx.array(y_hf.double().numpy()), mx.array(s_hf.double().numpy())), 1e-5)


@pytest.mark.parametrize("C", [8, 16, 64])
def test_blocked_decay_equals_plain_even_for_huge_decays(C):
    g = -mx.exp(4 * mx.random.normal((3, 5, C)))  # per-token decays up to ~-1e5
    G = mx.cumsum(g, axis=-1)
    got, want = blocked_decay(G, block=4), causal_decay(G)
    assert mx.all(mx.isfinite(got)).item()
    assert mx.allclose(got, want, rtol=1e-5, atol=1e-7).item()


@pytest.mark.parametrize("C", [1, 7, 16, 64])
def test_block_inverse(C):
    A = mx.tril(0.3 * mx.random.normal((2, 5, C, C)), -1)
    want = mx.linalg.inv(mx.eye(C) + A, stream=mx.cpu)
    assert relative_error(block_inverse(A), want) <= 1e-5


def alike_keys(T, B=2, Hv=4, seed=0):
    """The inputs that broke the Neumann-product inverse (found training the tiny model):
    keys nearly alike, decays weak, betas near 1. The chunk's true (I + A)^-1 stays
    small, but the powers of A reach ~1e16 at C = 64."""
    mx.random.seed(seed)
    unit = lambda x: x / mx.linalg.norm(x, axis=-1, keepdims=True)
    base = mx.random.normal((1, 1, HK, DK))
    k = unit(base + 0.05 * mx.random.normal((B, T, HK, DK)))
    q = unit(base + 0.05 * mx.random.normal((B, T, HK, DK))) * DK**-0.5
    v = mx.random.normal((B, T, Hv, DV))
    g = -0.01 * mx.random.uniform(shape=(B, T, Hv))
    beta = 0.85 + 0.1 * mx.random.uniform(shape=(B, T, Hv))
    return q, k, v, g, beta


def test_chunked_scan_stays_exact_with_alike_keys_and_weak_decays():
    inputs = alike_keys(300)
    with mx.stream(mx.cpu):  # float64: the CPU only
        want = gated_delta_reference(*(x.astype(mx.float64) for x in inputs))
    got = gated_delta_chunked(*inputs)
    assert all(mx.all(mx.isfinite(x)).item() for x in got)
    assert_close(got, want, 1e-4)


@pytest.mark.parametrize("T", range(1, MAX_T + 1))
@pytest.mark.parametrize("ratio", [1, 4])
def test_steps_form_the_state_after_every_token(T, ratio):
    """A verify's per-token states, formed from its terms, against the oracle run
    on the first t tokens; from a given state and from none."""
    q, k, v, g, beta, state = make_inputs(T, ratio, seed=T)
    for start in (state, None):
        y, last, terms = gated_delta_steps(q, k, v, g, beta, start)
        assert_close((y, last), gated_delta_reference(q, k, v, g, beta, start), 1e-5)
        for t in range(T + 1):
            want = start if t == 0 else gated_delta_reference(
                q[:, :t], k[:, :t], v[:, :t], g[:, :t], beta[:, :t], start)[1]
            got = state_after(start, terms, t)
            if want is None:
                assert not mx.any(got).item()
            else:
                assert_close([got], [want], 1e-5)


@pytest.mark.parametrize("T", [1, 3, 40])
def test_mx_fast_path_matches_reference(T):
    """dispatch.FAST (MLX core's gated_delta_update) under our contract, padded rows too."""
    q, k, v, g, beta, state = make_inputs(T, 2, seed=T)
    lengths = mx.array([T, max(T - 2, 0)])
    with dispatch.using(dispatch.FAST):
        got = gated_delta(q, k, v, g, beta, state, lengths)
    assert_close(got, gated_delta_reference(q, k, v, g, beta, state, lengths), 1e-5)


def test_calibrate_keeps_the_fastest_and_drops_a_broken_path():
    def slow(*a):
        time.sleep(0.02)
        return gated_delta_decode(*a)

    def broken(*a):
        raise RuntimeError("no kernel for this device")

    fast = dispatch.Policy(gated_delta_decode, gated_delta_chunked, "ops")
    candidates = (dispatch.Policy(slow, slow), dispatch.Policy(broken, broken), fast)
    picked = dispatch.calibrate(1, 2, 16, 16, mx.float32, candidates, lengths=(1, 16),
                                repeats=1)
    assert picked.few is gated_delta_decode and picked.many is gated_delta_chunked


def test_using_restores_the_policy():
    before = dispatch.policy()
    with dispatch.using(dispatch.FAST):
        assert dispatch.policy() is dispatch.FAST
    assert dispatch.policy() is before


def test_long_prefill_traces_under_compile():
    # Past one group the chunked path evaluates between groups; under
    # mx.compile it must skip that and still give the same numbers.
    args = make_inputs(600, B=1, seed=6)
    traced = mx.compile(lambda *a: gated_delta(*a))
    assert_close(traced(*args), gated_delta(*args), 1e-6)
