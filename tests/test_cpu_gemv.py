"""The lm_head's one-row product through sgemv (cpu/gemv.py), against x @ W.T and HF."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import torch

from mlx_qwen3next import load_model
from mlx_qwen3next.cpu import gemv as head
from mlx_qwen3next.cpu.blas import openblas
from mlx_qwen3next.cpu.gemv import HeadEmbedding, HeadLinear, gemv, head_product
from mlx_qwen3next.cpu.products import BlockedLinear
from mlx_qwen3next.cpu.specialise import unspecialise

from conftest import hf_model
from test_cpu_products import rel_err, weight

pytestmark = [pytest.mark.cpu_only,
              pytest.mark.skipif(openblas() is None, reason="no system OpenBLAS loaded")]


@pytest.mark.parametrize("shape", [(1, 1, 300), (1, 300), (300,)])
@pytest.mark.parametrize("out", [1, 7, 5000])
def test_gemv_equals_the_product(shape, out):
    x = mx.random.normal(shape, key=mx.random.key(out))
    w = weight(out, 300, seed=out)
    y = gemv(x, w)
    assert y is not None and y.shape == (*shape[:-1], out) and y.dtype == mx.float32
    assert rel_err(y, x @ w.T) <= 1e-6


def test_gemv_reads_a_slice_of_a_larger_array():
    w = weight(64, 300)[8:40]  # rows of another array: contiguous, at an offset
    x = mx.random.normal((1, 300))
    assert rel_err(gemv(x, w), x @ w.T) <= 1e-6


@pytest.mark.parametrize("case", ["two rows", "bfloat16", "strided weight", "lazy x"])
def test_where_gemv_does_not_apply_the_head_is_unchanged(case):
    x, w = mx.random.normal((1, 300)), weight(500, 300)
    if case == "two rows":
        x = mx.random.normal((2, 1, 300))
    elif case == "bfloat16":
        x, w = x.astype(mx.bfloat16), w.astype(mx.bfloat16)
    elif case == "strided weight":
        w = weight(300, 500).T
    elif case == "lazy x":  # an unevaluated input is evaluated, then multiplied
        x = mx.tanh(x) * 2
    y = gemv(x, w)
    assert (y is not None) == (case == "lazy x")
    assert rel_err(head_product(x, w).astype(mx.float32), (x @ w.T).astype(mx.float32)) <= 1e-2
    if case != "bfloat16":
        assert rel_err(head_product(x, w), x @ w.T) <= 1e-6


def test_under_compile_the_head_keeps_mlx_products():
    w = weight(500, 300)
    x = mx.random.normal((1, 1, 300))
    compiled = mx.compile(lambda x: head_product(x, w))
    assert rel_err(compiled(x), x @ w.T) <= 1e-6


def test_only_the_lm_head_is_swapped_and_unspecialise_restores_it(make_checkpoint):
    model = load_model(make_checkpoint())
    heads = [name for name, m in model.named_modules() if isinstance(m, HeadLinear)]
    assert heads == ["lm_head"]
    assert type(model.mtp.fc) is BlockedLinear
    unspecialise(model)
    assert type(model.lm_head) is nn.Linear


@pytest.mark.parametrize("tied", [False, True])
def test_decode_steps_take_sgemv_and_match_transformers(tied, make_checkpoint, monkeypatch):
    """Each one-token step's logits come from sgemv (counted), the prompt's from the
    MLX product; all of them equal transformers' in float64."""
    path = make_checkpoint("tied", tie_word_embeddings=True) if tied else make_checkpoint()
    model = load_model(path)
    if tied:
        assert isinstance(model.model.embed_tokens, HeadEmbedding) and "lm_head" not in model
    taken = []

    def counted(x, w):
        y = gemv(x, w)
        taken.append(y is not None)
        return y

    monkeypatch.setattr(head, "gemv", counted)
    ids = np.random.default_rng(8).integers(0, 500, (1, 10))
    cache = model.make_cache()
    steps = [model(mx.array(ids[:, :6]), cache)]
    steps += [model(mx.array(ids[:, t:t + 1]), cache) for t in range(6, 10)]
    assert taken == [False] + [True] * 4
    ours = np.array(mx.concatenate(steps, axis=1))
    with torch.no_grad():
        ref = hf_model(path)(torch.tensor(ids)).logits.numpy()
    assert rel_err(ours, ref) <= 1e-4
