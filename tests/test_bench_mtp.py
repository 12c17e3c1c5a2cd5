"""bench/mtp.py's projection and its perfect-drafter construction, on a tiny slice."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx.core)
import mlx.core as mx
from mlx_qwen3next import load_model
from mlx_qwen3next.speculative import MTPStats, speculative_stream

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from mtp import make_drafter, speedup  # noqa: E402
from slice import build_slice  # noqa: E402
from test_bench_slice import TINY  # noqa: E402


def test_speedup_prices_the_first_draft_at_the_tokens_it_takes():
    verify = {k: 1.0 + 0.5 * k for k in range(1, 5)}
    draft = {T: 0.1 * T for T in range(1, 6)}
    for k in range(1, 5):
        # every draft accepted: k + 1 tokens, the first draft step takes k + 1 tokens
        assert speedup(1.0, verify, draft, k, 1.0) == pytest.approx(
            (k + 1) / (verify[k] + draft[k + 1] + (k - 1) * draft[1]))
        # none accepted: one token a round, every draft step one token
        assert speedup(1.0, verify, draft, k, 0.0) == pytest.approx(
            1 / (verify[k] + k * draft[1]))


@pytest.mark.parametrize("k", [1, 3])
def test_make_drafter_drafts_the_main_models_greedy_token(tmp_path, k):
    model = load_model(build_slice(tmp_path / "s", layers=4, experts=8, mtp=True, **TINY))
    make_drafter(model)
    stats = MTPStats()
    prompt = mx.random.randint(0, 500, (12,), key=mx.random.key(3)).tolist()
    out = [t for t, *_ in speculative_stream(model, prompt, model.make_cache(), draft_tokens=k,
                                             max_tokens=17, stats=stats)]
    assert len(out) == 17 and stats.drafted > 0
    assert stats.acceptance == 1.0
