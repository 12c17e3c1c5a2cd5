"""bf16 checkpoints are loaded exactly: the zero-centred norms get their +1 in float32 and
stay in float32, in memory and in what `convert` writes (bf16's step near 1.0 is 2^-7,
which would round most of each perturbation away)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.utils import load_model as mlx_lm_load_model
from mlx_qwen3next import load_model
from mlx_qwen3next.model.norms import is_zero_centred
from mlx_qwen3next.quantize import convert
from mlx_qwen3next.testing.tiny import tiny_config, write_checkpoint

from conftest import hf_model

# group size 64 divides every quantized input dimension
CFG = tiny_config(moe_intermediate_size=64, shared_expert_intermediate_size=64)
IDS = np.random.default_rng(7).integers(0, 500, (1, 16))


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def header_dtypes(folder) -> dict[str, str]:
    out = {}
    for f in folder.glob("*.safetensors"):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        out.update({k: v["dtype"] for k, v in header.items() if k != "__metadata__"})
    return out


@pytest.fixture(scope="module")
def bf16_source(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("bf16") / "tiny", CFG, dtype="bfloat16")


def norms(model) -> dict[str, mx.array]:
    return {k: v for k, v in tree_flatten(model.parameters()) if is_zero_centred(k)}


def test_native_load_keeps_exact_norms_and_matches_transformers(bf16_source):
    model = load_model(bf16_source)
    assert model.model.embed_tokens.weight.dtype == mx.bfloat16
    source = mx.load(str(next(bf16_source.glob("*.safetensors"))))
    for name, w in norms(model).items():
        assert w.dtype == mx.float32, name
        if name in source:
            assert mx.array_equal(w, source[name].astype(mx.float32) + 1.0).item(), name
    model.set_dtype(mx.float32)  # run in float32
    with torch.no_grad():
        ref = hf_model(bf16_source)(torch.tensor(IDS)).logits.numpy()
    assert rel_err(model(mx.array(IDS)), ref) <= 1e-4


def test_bf16_model_keeps_bf16_activations(bf16_source):
    model = load_model(bf16_source)
    assert model(mx.array(IDS)).dtype == mx.bfloat16


def test_converted_norms_are_float32_on_disk_and_load_alike(bf16_source, tmp_path):
    out = tmp_path / "tiny-4bit"
    convert(bf16_source, out, progress=False)
    dtypes = header_dtypes(out)
    zero_centred = [k for k in dtypes if is_zero_centred(k)]
    assert zero_centred and all(dtypes[k] == "F32" for k in zero_centred)
    assert dtypes["model.layers.0.linear_attn.norm.weight"] == "BF16"  # a plain weight
    ours = load_model(out)
    theirs, _ = mlx_lm_load_model(out)
    for model in (ours, theirs):
        model.set_dtype(mx.float32)
    a, b = ours(mx.array(IDS)), theirs(mx.array(IDS))
    assert rel_err(a, b) <= 1e-5
