"""Quantized vs unquantized next-token distributions on a tiny checkpoint, through
`check` (what `convert --check` runs), with bounds per recipe.

The tiny model's lm_head is tempered (x0.25) so that its logits are not chaotic:
at the tiny's default gain, 4-bit noise on 64-wide matrices flips most argmaxes.
"""

import json

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx)
import pytest

from mlx_qwen3next.quantize import check, convert, format_check
from mlx_qwen3next.testing.tiny import random_weights, tiny_config, write_checkpoint

CFG = tiny_config(hidden_size=128, moe_intermediate_size=64, shared_expert_intermediate_size=64)
IDS = [[1, 5, 9, 200, 33, 7, 8, 100, 17, 300, 41, 2], [300, 2, 2, 77, 120, 4]]
# recipe -> (max mean KL in nats, min top-1 agreement)
BOUNDS = {"8bit": (0.05, 0.75), "4bit": (0.5, 0.0), "mixed-3-4": (1.0, 0.0)}


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    w = random_weights(CFG, seed=1)
    w["lm_head.weight"] *= 0.25
    return write_checkpoint(tmp_path_factory.mktemp("q") / "src", CFG, weights=w, dtype="float32")


@pytest.fixture(scope="module")
def results(src, tmp_path_factory):
    out = {}
    for recipe in BOUNDS:
        target = tmp_path_factory.mktemp("q") / recipe
        convert(src, target, recipe=recipe, progress=False)
        out[recipe] = check(src, target, token_ids=IDS)
        print(f"\n{recipe}: {format_check(out[recipe])}")
    return out


@pytest.mark.parametrize("recipe", list(BOUNDS))
def test_kl_and_top1_bounded(results, recipe):
    max_kl, min_top1 = BOUNDS[recipe]
    r = results[recipe]
    assert r["positions"] == sum(len(i) for i in IDS)
    assert 0 <= r["kl"] <= max_kl
    assert r["top1"] >= min_top1


def test_more_bits_is_closer(results):
    assert results["8bit"]["kl"] < results["4bit"]["kl"] < results["mixed-3-4"]["kl"]


def test_check_with_prompts_uses_source_tokenizer(src, tmp_path):
    target = tmp_path / "8"
    convert(src, target, recipe="8bit", progress=False)
    r = check(src, target, prompts=["hello world", "The capital of France is"])
    assert r["positions"] > 4 and r["kl"] < 0.05
    assert json.loads((target / "config.json").read_text())["quantization"]["bits"] == 8
