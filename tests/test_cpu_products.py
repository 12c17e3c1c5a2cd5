"""The CPU decode products (cpu/products.py) against the plain x @ W.T."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import torch

from mlx_qwen3next import load_model
from mlx_qwen3next.cpu import products as linear
from mlx_qwen3next.cpu.products import (BlockedLinear as Linear, block_rows, blocked, matmul_t,
                                        narrow, narrow_matmul, row_blocked_matmul)

from conftest import hf_model

pytestmark = pytest.mark.cpu_only


def rel_err(a, b) -> float:
    a, b = (np.asarray(x, np.float64) for x in (a, b))
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def weight(out: int, d: int, seed: int = 0) -> mx.array:
    return mx.random.normal((out, d), key=mx.random.key(seed)) * 0.05


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 64 KB, so the tests' small weights take the blocked path."""
    monkeypatch.setattr(linear, "BLOCK_BYTES", 64 << 10)


@pytest.mark.parametrize("out", [4096, 4096 + 96, 3 * 1024 + 1])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8])
def test_matches_plain_product(small_blocks, out, rows):
    w = weight(out, 256, seed=out)
    x = mx.random.normal((rows, 256), key=mx.random.key(rows))
    assert block_rows(w) == 64 and blocked(x, w)
    assert rel_err(row_blocked_matmul(x, w), x @ w.T) <= 1e-6


def test_leading_dims_and_bias(small_blocks):
    layer = Linear(256, 4096 + 40, bias=True)
    layer.bias = mx.random.normal(layer.bias.shape, key=mx.random.key(1))
    x = mx.random.normal((2, 3, 256), key=mx.random.key(2))
    assert blocked(x, layer.weight)
    plain = x @ layer.weight.T + layer.bias
    assert layer(x).shape == (2, 3, 4096 + 40)
    assert rel_err(layer(x), plain) <= 1e-6


def test_under_compile(small_blocks):
    w = weight(4096 + 8, 256)
    x = mx.random.normal((4, 256), key=mx.random.key(3))
    fn = mx.compile(lambda x, w: row_blocked_matmul(x, w) * 2.0)
    assert rel_err(fn(x, w), 2.0 * (x @ w.T)) <= 1e-6


def test_which_products_are_blocked(small_blocks):
    w = weight(4096, 256)
    x = mx.zeros((9, 256))
    assert not blocked(x, w)  # prefill-sized: one product
    assert not blocked(x[:4].astype(mx.float16), w.astype(mx.float16))  # no CPU BLAS
    assert not blocked(x[:4], w[:100])  # under two blocks
    assert blocked(x[:4], w)


@pytest.mark.parametrize("rows", [1, 2, 4, 8])
def test_narrow_matches_plain_product(rows):
    """A weight under two blocks but over NARROW_BYTES: (W @ x.T).T, leading dims kept."""
    w = weight(96, 4096, seed=rows)  # 1.5 MB: one 8 MB block
    x = mx.random.normal((1, rows, 4096), key=mx.random.key(rows))
    assert narrow(x, w) and not blocked(x, w)
    assert narrow_matmul(x, w).shape == (1, rows, 96)
    assert rel_err(narrow_matmul(x, w), x @ w.T) <= 1e-6
    assert rel_err(matmul_t(x, w), x @ w.T) <= 1e-6
    layer = Linear(4096, 96, bias=True)
    layer.weight, layer.bias = w, mx.ones((96,))
    assert rel_err(layer(x), x @ w.T + 1.0) <= 1e-6


def test_which_products_are_narrow():
    w = weight(256, 2048)  # 2 MB, one block
    x = mx.zeros((4, 2048))
    assert narrow(x, w) and not blocked(x, w)
    assert not narrow(mx.zeros((9, 2048)), w)  # prefill-sized
    assert not narrow(x, w[:64])  # 512 KB: stays in cache, plain product
    assert not narrow(x.astype(mx.bfloat16), w.astype(mx.bfloat16))


def test_real_block_size():
    """At the real width a block is 1024 rows of 2048 floats: 8 MB."""
    assert block_rows(mx.zeros((151936, 2048))) == 1024
    assert block_rows(mx.zeros((2048, 4096))) == 512


def test_quantizes_like_nn_linear():
    layer = Linear(256, 512, bias=False)
    seq = nn.Sequential(layer)
    nn.quantize(seq, group_size=64, bits=4)
    assert isinstance(seq.layers[0], nn.QuantizedLinear)


def test_model_with_blocked_products_matches_transformers(small_blocks, make_checkpoint):
    """The tiny model with every large-enough projection blocked (lm_head at least),
    decoding token by token on the compiled steps, against transformers' full forward."""
    path = make_checkpoint()
    model = load_model(path)
    assert isinstance(model.lm_head, Linear)
    assert blocked(mx.zeros((1, model.lm_head.weight.shape[1])), model.lm_head.weight)
    ids = np.random.default_rng(5).integers(0, 500, (1, 12))
    cache = model.make_cache()
    steps = [model(mx.array(ids[:, :4]), cache)]
    steps += [model(mx.array(ids[:, t:t + 1]), cache) for t in range(4, 12)]
    ours = np.array(mx.concatenate(steps, axis=1))
    with torch.no_grad():
        ref = hf_model(path)(torch.tensor(ids)).logits.numpy()
    assert rel_err(ours, ref) <= 1e-4


def test_tied_embeddings_take_the_blocked_head(small_blocks, make_checkpoint):
    path = make_checkpoint("tied", tie_word_embeddings=True)
    model = load_model(path)
    weight = model.model.embed_tokens.weight
    assert "lm_head" not in model and blocked(mx.zeros((1, weight.shape[1])), weight)
    ids = np.random.default_rng(6).integers(0, 500, (1, 6))
    cache = model.make_cache()
    steps = [model(mx.array(ids[:, :5]), cache), model(mx.array(ids[:, 5:]), cache)]
    ours = np.array(mx.concatenate(steps, axis=1))
    with torch.no_grad():
        ref = hf_model(path)(torch.tensor(ids)).logits.numpy()
    assert rel_err(ours, ref) <= 1e-4
