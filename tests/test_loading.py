"""Loading: config styles, the public API, and one clear error for each kind of bad checkpoint."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import mlx.core as mx
import mlx_qwen3next
from mlx_qwen3next import ConfigError, LoadError, ModelConfig, load, load_model
from mlx_qwen3next.testing.tiny import tiny_config


def test_hub_and_v5_configs_agree():
    hub = tiny_config(rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                    "original_max_position_embeddings": 262144})
    v5 = {k: v for k, v in hub.items()
          if k not in ("rope_theta", "partial_rotary_factor", "rope_scaling",
                       "full_attention_interval")}
    v5["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1e7, "partial_rotary_factor": 0.25,
                             "factor": 4.0, "original_max_position_embeddings": 262144}
    v5["layer_types"] = ["linear_attention"] * 3 + ["full_attention"]
    a, b = ModelConfig.from_dict(hub), ModelConfig.from_dict(v5)
    assert a.layer_types == b.layer_types == v5["layer_types"]
    assert a.rope_theta == b.rope_theta == 1e7
    assert a.partial_rotary_factor == b.partial_rotary_factor == 0.25
    assert a.rope_scaling["factor"] == b.rope_scaling["factor"] == 4.0
    assert b.rope_scaling["rope_type"] == "yarn"
    assert a.rotary_dim == 8


def test_real_model_layer_pattern():
    cfg = ModelConfig.from_dict({"model_type": "qwen3_next"})
    assert sum(cfg.is_linear(i) for i in range(48)) == 36
    assert [i for i in range(48) if not cfg.is_linear(i)][:3] == [3, 7, 11]


def test_load_returns_model_and_chat_tokenizer(tiny_checkpoint):
    model, tok = load(tiny_checkpoint)
    assert isinstance(model, mlx_qwen3next.Model)
    cache = model.make_cache()
    assert len(cache) == 4
    text = tok.apply_chat_template([{"role": "user", "content": "Hello"}],
                                   add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>user\nHello<|im_end|>")
    assert tok.convert_tokens_to_ids("<|im_end|>") in tok.eos_token_ids
    assert tok.convert_tokens_to_ids("<|endoftext|>") in tok.eos_token_ids
    ids = tok.encode(text)
    assert model(mx.array([ids])).shape == (1, len(ids), 512)


@pytest.fixture
def broken(tiny_checkpoint, tmp_path):
    """A writable copy of the tiny checkpoint to break in one way."""
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, dst)
    return dst


def shard_with(path, name):
    index = json.loads((path / "model.safetensors.index.json").read_text())
    return path / index["weight_map"][name]


def rewrite_shard(path, name, change):
    shard = shard_with(path, name)
    tensors = dict(mx.load(str(shard)))
    change(tensors)
    mx.save_safetensors(str(shard), tensors, metadata={"format": "pt"})
    return shard


def expect_error(path, *fragments):
    with pytest.raises((LoadError, ConfigError)) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_no_config(broken):
    (broken / "config.json").unlink()
    expect_error(broken, "config.json", str(broken))


def test_other_model_type(broken):
    cfg = json.loads((broken / "config.json").read_text())
    cfg["model_type"] = "llama"
    (broken / "config.json").write_text(json.dumps(cfg))
    expect_error(broken, "llama", "config.json")


def test_missing_shard(broken):
    shard = shard_with(broken, "lm_head.weight")
    shard.unlink()
    expect_error(broken, shard.name, "missing")


def test_truncated_shard(broken):
    shard = shard_with(broken, "lm_head.weight")
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    expect_error(broken, shard.name, "truncated")


def test_garbage_shard(broken):
    shard = shard_with(broken, "lm_head.weight")
    shard.write_bytes(b"not a safetensors file at all")
    expect_error(broken, shard.name, "safetensors")


def test_wrong_shape(broken):
    name = "model.layers.0.linear_attn.out_proj.weight"
    rewrite_shard(broken, name, lambda t: t.update({name: t[name][:, :-1]}))
    expect_error(broken, name, "shape")


def test_missing_tensor(broken):
    name = "model.layers.3.self_attn.k_norm.weight"
    rewrite_shard(broken, name, lambda t: t.pop(name))
    expect_error(broken, name, "missing")


def test_missing_expert(broken):
    name = "model.layers.1.mlp.experts.5.up_proj.weight"
    rewrite_shard(broken, name, lambda t: t.pop(name))
    expect_error(broken, name, "missing")


def test_unexpected_tensor(broken):
    name = "model.layers.0.linear_attn.out_proj.weight"
    extra = "model.layers.0.linear_attn.surprise.weight"
    rewrite_shard(broken, name, lambda t: t.update({extra: mx.zeros((2,))}))
    expect_error(broken, extra, "unexpected")


def test_checkpoint_without_mtp_loads_without_head(make_checkpoint):
    model = load_model(make_checkpoint("nomtp", mtp=False))
    assert not model.has_mtp
    assert not load_model(make_checkpoint(), mtp=False).has_mtp


def test_integer_tensor_where_a_float_belongs(broken):
    name = "model.layers.0.linear_attn.in_proj_ba.weight"
    rewrite_shard(broken, name, lambda t: t.update({name: t[name].astype(mx.int32)}))
    expect_error(broken, name, "int32, expected a float")
