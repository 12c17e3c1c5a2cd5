"""Long context and memory: a 32k-token prompt in bounded memory, KV bytes per token,
YaRN equal to transformers', the 8-bit KV cache, fit-before-load and the wired limit."""

from __future__ import annotations

import time

import numpy as np
import pytest

import mlx_qwen3next  # noqa: F401
import mlx.core as mx
from mlx_qwen3next import ModelConfig, load, stream_generate
from mlx_qwen3next.cache import KVCache
from mlx_qwen3next.generation.kv_quant import QuantizedKVCache, quantize_kv
from mlx_qwen3next.generation.context import YARN_1M, context_limit, set_rope_scaling
from mlx_qwen3next.checkpoints import memory
from mlx_qwen3next.checkpoints.memory import InsufficientMemoryError, check_fits, kv_bytes_per_token

GREEDY = dict(temperature=0.0, mtp=False)
REAL = {  # the published config's attention / RoPE fields, Hub style
    "model_type": "qwen3_next", "hidden_size": 2048, "num_hidden_layers": 48,
    "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256,
    "rope_theta": 10000000, "partial_rotary_factor": 0.25,
    "max_position_embeddings": 262144, "full_attention_interval": 4,
}


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return load(tiny_checkpoint)


def kv_bytes(cache) -> int:
    return sum(c.nbytes for c in cache if isinstance(c, KVCache))


def test_a_32k_prompt_runs_in_bounded_memory(make_checkpoint):
    # one attention head: MLX's CPU attention materialises chunk x context scores per
    # head and takes ~2 s per head per 2048-token chunk at 32k on two cores
    model, tok = load(make_checkpoint("32k", num_attention_heads=1, num_key_value_heads=1))
    n = 32768
    ids = np.random.default_rng(0).integers(0, 490, n).tolist()
    cache = model.make_cache()
    mx.synchronize()
    mx.reset_peak_memory()
    tic = time.perf_counter()
    out = list(stream_generate(model, tok, ids, cache=cache, max_tokens=4, **GREEDY))
    seconds = time.perf_counter() - tic
    peak = mx.get_peak_memory()
    per_token = kv_bytes_per_token(model.config, mx.float32)
    print(f"\n32k prompt: {seconds:.1f} s, {n / out[-1].prompt_time:.0f} tok/s prefill, "
          f"peak memory {peak / 2**20:.0f} MiB, cache {cache.nbytes / 2**20:.1f} MiB "
          f"(KV {per_token} B/token)")
    assert 1 <= len(out) <= 4 and cache.offset == n + len(out) - 1
    assert kv_bytes(cache) == cache.offset * per_token
    # weights + cache + one 2048-token chunk's work (its attention scores: 2048 x 32k x
    # 4 B = 256 MiB); an unchunked prefill would need 32k x 32k x 4 B = 4 GiB
    assert peak < 512 * 2**20


def test_kv_cache_grows_by_the_expected_bytes_per_token(tiny):
    model, tok = tiny
    cfg = model.config
    attn = sum(t == "full_attention" for t in cfg.layer_types)
    want = 2 * attn * cfg.num_key_value_heads * cfg.head_dim * 4  # float32
    assert kv_bytes_per_token(cfg, mx.float32) == want == 512
    cache = model.make_cache()
    list(stream_generate(model, tok, list(range(100)), cache=cache, max_tokens=1, **GREEDY))
    first = kv_bytes(cache)
    list(stream_generate(model, tok, list(range(57)), cache=cache, max_tokens=1, **GREEDY))
    assert kv_bytes(cache) - first == 57 * want
    real = ModelConfig.from_dict(REAL)
    assert kv_bytes_per_token(real, mx.bfloat16) == 24576  # 12 x 2 x 2 x 256 x 2 B
    assert kv_bytes_per_token(real, mx.bfloat16, kv_bits=8) == 24576 / 2 * (1 + 4 / 64)


@pytest.mark.parametrize("max_positions", [262144, 1048576])
def test_yarn_equals_transformers_for_the_real_config(max_positions):
    import torch
    from transformers import Qwen3NextConfig
    from transformers.models.qwen3_next.modeling_qwen3_next import (
        Qwen3NextRotaryEmbedding, apply_rotary_pos_emb,
    )

    from mlx_qwen3next.model.attention import Attention

    raw = {**REAL, "max_position_embeddings": max_positions, "rope_scaling": dict(YARN_1M)}
    hf_cfg = Qwen3NextConfig(**{k: v for k, v in raw.items() if k != "model_type"})
    hf_rope = Qwen3NextRotaryEmbedding(hf_cfg)
    attn = Attention(ModelConfig.from_dict(raw))
    ours = attn.rope
    want_inv = hf_rope.inv_freq.double().numpy()
    np.testing.assert_allclose(1.0 / np.array(ours._freqs), want_inv, rtol=1e-6)
    assert ours.attention_scaling == pytest.approx(hf_rope.attention_scaling, rel=1e-12)
    assert ours.attention_scaling == pytest.approx(0.1 * np.log(4) + 1)

    # the rotation itself, at positions up to ~1M
    pos = [0, 1, 4097, 262143, 700001, 1048575]
    x = np.random.default_rng(0).normal(size=(1, 2, len(pos), 256)).astype(np.float32)
    cos, sin = hf_rope(torch.zeros(1, dtype=torch.float64), torch.tensor([pos]))
    want, _ = apply_rotary_pos_emb(torch.tensor(x, dtype=torch.float64),
                                   torch.tensor(x, dtype=torch.float64),
                                   cos.double(), sin.double())
    got = np.stack([np.array(ours(mx.array(x[:, :, i : i + 1]), p))[:, :, 0]
                    for i, p in enumerate(pos)], axis=2)
    np.testing.assert_allclose(got, want.numpy(), atol=2e-3, rtol=0)


def test_context_limit_and_switching_yarn_on(make_checkpoint):
    model, tok = load(make_checkpoint("yarn-switch"))
    assert context_limit(model.config) == 262144
    ids = list(range(40))
    plain = [r.token for r in stream_generate(model, tok, ids, max_tokens=6, **GREEDY)]
    assert set_rope_scaling(model) == 1048576 == context_limit(model.config)
    assert model.layers[3].self_attn.rope.attention_scaling > 1
    with pytest.raises(ValueError, match="rope_scaling factor must be > 1"):
        set_rope_scaling(model, {"rope_type": "yarn", "factor": 0.5})
    with pytest.raises(ValueError, match="unsupported rope_scaling type"):
        set_rope_scaling(model, {"rope_type": "dynamic", "factor": 2})
    set_rope_scaling(model, None)
    assert [r.token for r in stream_generate(model, tok, ids, max_tokens=6, **GREEDY)] == plain


def test_8bit_kv_cache_is_close_to_full_precision(tiny):
    model, tok = tiny
    ids = mx.array([np.random.default_rng(1).integers(0, 490, 300).tolist()])
    full, quant = model.make_cache(), quantize_kv(model.make_cache(), bits=8)
    assert any(isinstance(c, QuantizedKVCache) for c in quant)
    a, b = model(ids, full), model(ids, quant)
    step = mx.array([[7]])
    a, b = model(step, full)[0, -1], model(step, quant)[0, -1]
    rel = float(mx.abs(a - b).max() / mx.abs(a).max())
    assert rel < 0.02, rel
    assert int(mx.argmax(a)) == int(mx.argmax(b))
    # 1 byte per element plus a float32 scale and bias per group of 32, vs 4 bytes
    assert kv_bytes(quant) == pytest.approx(kv_bytes(full) * (1 + 2 * 4 / 32) / 4, rel=0.01)
    out = list(stream_generate(model, tok, "Hello", kv_bits=8, max_tokens=5, **GREEDY))
    assert len(out) == 5


def test_8bit_kv_cache_snapshot_and_trim():
    cache = QuantizedKVCache(bits=8, group_size=64)
    k = mx.random.normal((1, 2, 10, 64))
    cache.update_and_fetch(k, k)
    state = cache.state()
    cache.update_and_fetch(k, k)
    cache.trim(10)
    got, _ = cache.update_and_fetch(k[:, :, :3], k[:, :, :3])
    assert got.shape == (1, 2, 13, 64) and float(mx.abs(got[:, :, :10] - k).max()) < 0.05
    cache.set_state(state)
    assert cache.offset == 10


def test_check_fits_before_loading(tiny_checkpoint):
    size = memory.checkpoint_bytes(tiny_checkpoint)
    assert size > 0
    assert check_fits(tiny_checkpoint, available=10 * size) >= size
    with pytest.raises(InsufficientMemoryError) as err:
        check_fits(tiny_checkpoint, available=size // 2)
    msg = str(err.value)
    assert "needs about" in msg and "available" in msg and "\n" not in msg
    with pytest.raises(InsufficientMemoryError, match="needs about 49.5 GB but only 32.0 GB"):
        check_fits(45 * 2**30, available=32 * 2**30)
    assert check_fits(45 * 2**30, available=64 * 2**30) == int(45 * 2**30 * 1.1)
    assert memory.available_memory() > 0


def test_wired_limit_is_a_no_op_off_metal(tiny, monkeypatch):
    calls = []
    monkeypatch.setattr(mx, "set_wired_limit", lambda n: calls.append(n) or 0)
    with memory.wired_limit(tiny[0]):
        pass
    assert calls == [] or mx.metal.is_available()


def test_wired_limit_raises_then_restores_on_metal(tiny, monkeypatch):
    limits = [123]

    def set_limit(n):
        old, limits[0] = limits[0], n
        return old

    monkeypatch.setattr(mx.metal, "is_available", lambda: True)
    monkeypatch.setattr(mx, "device_info", lambda: {"max_recommended_working_set_size": 10**9})
    monkeypatch.setattr(mx, "set_wired_limit", set_limit)
    monkeypatch.setattr(mx, "synchronize", lambda *a: None)
    model = tiny[0]
    with memory.wired_limit(model):
        assert limits[0] == int(memory.model_bytes(model) * 1.1)
    assert limits[0] == 123
    with pytest.warns(UserWarning, match="close to this Mac's recommended maximum"):
        with memory.wired_limit(needed=2 * 10**9):
            assert limits[0] == 10**9  # capped at the recommended working set
    assert limits[0] == 123
