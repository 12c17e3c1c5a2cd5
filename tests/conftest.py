"""Shared fixtures: tiny random checkpoints in the real layout, and the transformers reference."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

import mlx_qwen3next  # noqa: F401  (loads OpenBLAS before mlx.core)
from mlx_qwen3next.testing.tiny import tiny_config, write_checkpoint

# Shapes the model tests cover: 2 value heads per key head with Dk = Dv, and
# 4 value heads per key head with Dk != Dv.
SHAPES = {
    "r2": {},
    "r4": dict(linear_num_key_heads=1, linear_num_value_heads=4, linear_value_head_dim=24),
}


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory):
    """make_checkpoint(name, dtype="float32", **config overrides) -> path (cached per session)."""
    made: dict[str, Path] = {}

    def make(name: str = "base", dtype: str = "float32", seed: int = 0, mtp: bool = True,
             **overrides) -> Path:
        key = json.dumps([name, dtype, seed, mtp, overrides], sort_keys=True)
        if key not in made:
            path = tmp_path_factory.mktemp(f"ckpt-{name}")
            write_checkpoint(path, tiny_config(**overrides), dtype=dtype, seed=seed, mtp=mtp)
            made[key] = path
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(make_checkpoint) -> Path:
    return make_checkpoint()


def hf_model(path, **kwargs):
    """transformers' Qwen3NextForCausalLM on the same checkpoint, in float64."""
    import torch
    from transformers import Qwen3NextForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Qwen3NextForCausalLM.from_pretrained(
            path, dtype=torch.float64, experts_implementation="eager", **kwargs
        )
    return model.eval()


def pytest_collection_modifyitems(config, items):
    """Tests of the CPU-only layouts run only where the default device is the CPU."""
    import mlx.core as mx

    if mx.default_device() == mx.cpu:
        return
    skip = pytest.mark.skip(reason="CPU-only layout; the default device is not the CPU")
    for item in items:
        if "cpu_only" in item.keywords:
            item.add_marker(skip)
