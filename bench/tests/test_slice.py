"""The end-to-end bench compares like with like: a tiny slice built by bench/slice.py loads
strictly in ours and in mlx-lm, and both give the same logits through the bench's runners."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx.core)
import mlx.core as mx

pytest.importorskip("mlx_lm")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runners import MlxLm, Ours  # noqa: E402
from slice import build_slice, link_slice, shard_specs, slice_config  # noqa: E402

TINY = dict(vocab_size=512, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
            head_dim=32, linear_key_head_dim=16, linear_value_head_dim=16,
            linear_num_key_heads=2, linear_num_value_heads=4, moe_intermediate_size=32,
            shared_expert_intermediate_size=48, num_experts_per_tok=2)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def tiny_slice(tmp_path_factory):
    return build_slice(tmp_path_factory.mktemp("slice8"), layers=8, experts=8, **TINY)


def test_real_dims_are_the_published_ones():
    cfg = slice_config(layers=4, experts=64)
    names = {n: s for spec in shard_specs(cfg).values() for n, (s, _) in spec.items()}
    assert names["model.layers.0.linear_attn.in_proj_qkvz.weight"] == (12288, 2048)
    assert names["model.layers.0.linear_attn.conv1d.weight"] == (8192, 4, 1)
    assert names["model.layers.3.self_attn.q_proj.weight"] == (8192, 2048)
    assert names["model.layers.3.mlp.switch_mlp.down_proj.weight"] == (64, 2048, 512)
    assert names["lm_head.weight"] == (151936, 2048)
    assert names["mtp.layers.0.self_attn.k_proj.weight"] == (512, 2048)
    assert cfg["num_experts_per_tok"] == 10


def test_same_weights_same_logits(tiny_slice):
    ids = mx.array(np.random.default_rng(0).integers(0, 512, (1, 40)))
    ours, theirs = Ours(tiny_slice, mtp=True), MlxLm(tiny_slice)
    assert ours.model.has_mtp  # ours read mtp.safetensors; mlx-lm loaded strictly without it
    for a, b in [(ours.model.lm_head.weight, theirs.model.lm_head.weight),
                 (ours.model.layers[5].mlp.switch_mlp.down_proj.weight,
                  theirs.model.layers[5].mlp.switch_mlp.down_proj.weight)]:
        assert mx.array_equal(a, b)

    logits = {}
    for r in (ours, theirs):
        cache = r.make_cache()
        out = [r.prefill(ids[:, :24], cache)]
        for t in range(24, 40):  # one-token decode steps through each side's own cache
            out.append(r.step(ids[:, t:t + 1], cache))
            mx.eval(out[-1], r.cache_arrays(cache))
        logits[r.name] = np.array(mx.concatenate(out, axis=1))
        logits[r.name + " full"] = np.array(r.step(ids, None))
    assert logits["ours"].shape == (1, 17, 512)
    assert rel_err(logits["ours"], logits["mlx-lm"]) <= 1e-4
    assert rel_err(logits["ours full"], logits["mlx-lm full"]) <= 1e-4
    # the prefill's last position and the decode steps are the full forward's positions
    assert rel_err(logits["ours"], logits["ours full"][:, 23:]) <= 1e-4
    # greedy tokens agree, so both sides decode the same sequence in the bench
    assert (logits["ours"].argmax(-1) == logits["mlx-lm"].argmax(-1)).all()
    # the bench's shared-weights mode: mlx-lm's module tree on ours' arrays, same logits
    shared = MlxLm(tiny_slice, share=ours)
    assert shared.model.lm_head.weight is ours.model.lm_head.weight or mx.array_equal(
        shared.model.lm_head.weight, ours.model.lm_head.weight)
    assert rel_err(shared.step(ids, None), logits["mlx-lm full"]) <= 1e-6


def test_linked_shallower_slice_loads_in_both(tiny_slice, tmp_path):
    path = link_slice(tiny_slice, tmp_path / "slice4", layers=4)
    assert json.loads((path / "config.json").read_text())["num_hidden_layers"] == 4
    ours, theirs = Ours(path, mtp=True), MlxLm(path)
    assert len(ours.model.layers) == len(theirs.model.layers) == 4
    ids = mx.array([[1, 2, 3, 4, 5]])
    assert rel_err(ours.step(ids, None), theirs.step(ids, None)) <= 1e-4
