"""bench/mtp.py's perfect-drafter construction, on a tiny slice: the head it makes
drafts the main model's greedy token every time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx.core)
import mlx.core as mx
from mlx_qwen3next import load_model
from mlx_qwen3next.generation.speculative import MTPStats, speculative_stream

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtp import make_drafter  # noqa: E402
from slice import build_slice  # noqa: E402
from test_slice import TINY  # noqa: E402


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
