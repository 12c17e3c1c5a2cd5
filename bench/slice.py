"""A slice of Qwen3-Next-80B-A3B with the real dimensions, as random float32 weights.

`build_slice(path, layers=4, experts=64)` writes a checkpoint in the converted
(mlx-lm) layout that both our loader and `mlx_lm.utils.load_model` read from the
very same files:

    config.json                    hub-style config (real dims, num_experts = `experts`)
    model-embed.safetensors       embeddings, final norm, lm_head
    model-layer-III.safetensors   decoder layer III (stacked switch_mlp experts,
                                  conv1d [C, K, 1], norms with the +1 already added)
    mtp.safetensors               the MTP head (mtp.*), when asked for

mlx-lm's qwen3_next has no MTP module and reads only `model*.safetensors`, so it
loads the main model strictly and never sees the head; our loader reads every
`*.safetensors` in the folder and picks the head up. Weights come from
`mx.random` with a fixed seed, one key per tensor name, and are written shard
by shard, holding one layer in memory at a time. A tensor does not depend on the
depth, so a shallower slice can hard-link the deeper one's files (`link_slice`):
the 4-layer slice is the first 4 layers of the 8-layer one.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx.core)
import mlx.core as mx

from mlx_qwen3next.testing.tiny import REAL_CONFIG as HUB_REAL_CONFIG

# The real model's dimensions, in float32 (the only fast CPU matmul dtype here).
REAL_CONFIG = dict(HUB_REAL_CONFIG, torch_dtype="float32")


def slice_config(layers: int = 4, experts: int = 64, **overrides) -> dict:
    cfg = dict(REAL_CONFIG, num_hidden_layers=layers, num_experts=experts)
    cfg.update(overrides)
    for key in ("bos_token_id", "eos_token_id"):  # a shrunk vocabulary keeps its ids valid
        if cfg.get(key) is not None and cfg[key] >= cfg["vocab_size"]:
            cfg[key] = cfg["vocab_size"] - 1
    return cfg


def is_linear(cfg: dict, i: int) -> bool:
    return (i + 1) % cfg["full_attention_interval"] != 0


# Each spec entry: name -> (shape, init) with init one of
#   ("linear", fan_in)  uniform with unit output variance for unit-variance input
#   ("norm",)           1 + small noise (zero-centred norms, +1 already added; and the gated norm)
#   ("embed",)          uniform(-1, 1)
#   ("conv",)           uniform(-0.5, 0.5)
#   ("a_log",) ("dt_bias",)


def layer_spec(cfg: dict, prefix: str, linear: bool) -> dict:
    H, E, I = cfg["hidden_size"], cfg["num_experts"], cfg["moe_intermediate_size"]
    S = cfg["shared_expert_intermediate_size"]
    spec = {f"{prefix}.input_layernorm.weight": ((H,), ("norm",)),
            f"{prefix}.post_attention_layernorm.weight": ((H,), ("norm",))}
    if linear:
        nk, nv = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"]
        dk, dv = cfg["linear_key_head_dim"], cfg["linear_value_head_dim"]
        a = f"{prefix}.linear_attn"
        conv_dim = 2 * nk * dk + nv * dv
        spec.update({
            f"{a}.in_proj_qkvz.weight": ((2 * nk * dk + 2 * nv * dv, H), ("linear", H)),
            f"{a}.in_proj_ba.weight": ((2 * nv, H), ("linear", H)),
            f"{a}.conv1d.weight": ((conv_dim, cfg["linear_conv_kernel_dim"], 1), ("conv",)),
            f"{a}.dt_bias": ((nv,), ("dt_bias",)),
            f"{a}.A_log": ((nv,), ("a_log",)),
            f"{a}.norm.weight": ((dv,), ("norm",)),
            f"{a}.out_proj.weight": ((H, nv * dv), ("linear", nv * dv)),
        })
    else:
        nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
        a = f"{prefix}.self_attn"
        spec.update({
            f"{a}.q_proj.weight": ((2 * nh * hd, H), ("linear", H)),
            f"{a}.k_proj.weight": ((nkv * hd, H), ("linear", H)),
            f"{a}.v_proj.weight": ((nkv * hd, H), ("linear", H)),
            f"{a}.o_proj.weight": ((H, nh * hd), ("linear", nh * hd)),
            f"{a}.q_norm.weight": ((hd,), ("norm",)),
            f"{a}.k_norm.weight": ((hd,), ("norm",)),
        })
    m = f"{prefix}.mlp"
    spec.update({
        f"{m}.gate.weight": ((E, H), ("linear", H)),
        f"{m}.switch_mlp.gate_proj.weight": ((E, I, H), ("linear", H)),
        f"{m}.switch_mlp.up_proj.weight": ((E, I, H), ("linear", H)),
        f"{m}.switch_mlp.down_proj.weight": ((E, H, I), ("linear", I)),
        f"{m}.shared_expert.gate_proj.weight": ((S, H), ("linear", H)),
        f"{m}.shared_expert.up_proj.weight": ((S, H), ("linear", H)),
        f"{m}.shared_expert.down_proj.weight": ((H, S), ("linear", S)),
        f"{m}.shared_expert_gate.weight": ((1, H), ("linear", H)),
    })
    return spec


def shard_specs(cfg: dict, mtp: bool = True) -> dict[str, dict]:
    """File name -> {tensor name -> (shape, init)}, in writing order."""
    H, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    shards = {"model-embed.safetensors": {
        "model.embed_tokens.weight": ((V, H), ("embed",)),
        "model.norm.weight": ((H,), ("norm",)),
        "lm_head.weight": ((V, H), ("linear", H)),
    }}
    for i in range(L):
        shards[f"model-layer-{i:03d}.safetensors"] = layer_spec(
            cfg, f"model.layers.{i}", is_linear(cfg, i))
    if mtp:
        head = {
            "mtp.fc.weight": ((H, 2 * H), ("linear", 2 * H)),
            "mtp.pre_fc_norm_embedding.weight": ((H,), ("norm",)),
            "mtp.pre_fc_norm_hidden.weight": ((H,), ("norm",)),
            "mtp.norm.weight": ((H,), ("norm",)),
        }
        head.update(layer_spec(cfg, "mtp.layers.0", linear=False))
        shards["mtp.safetensors"] = head
    return shards


def _init(shape, init, key) -> mx.array:
    kind = init[0]
    if kind == "linear":
        s = (3.0 / init[1]) ** 0.5
        return mx.random.uniform(-s, s, shape, key=key)
    if kind == "norm":
        return 1.0 + mx.random.uniform(-0.1, 0.1, shape, key=key)
    if kind == "embed":
        return mx.random.uniform(-1.0, 1.0, shape, key=key)
    if kind == "conv":
        return mx.random.uniform(-0.5, 0.5, shape, key=key)
    if kind == "a_log":
        return mx.log(mx.random.uniform(0.5, 4.0, shape, key=key))
    if kind == "dt_bias":
        return mx.random.uniform(0.5, 1.5, shape, key=key)
    raise ValueError(kind)


def tensor_key(seed: int, name: str) -> mx.array:
    """One PRNG key per tensor name: a layer's weights do not depend on the depth."""
    return mx.random.key((seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)


def build_slice(path, layers: int = 4, experts: int = 64, mtp: bool = True, seed: int = 0,
                **overrides) -> Path:
    """Write the slice checkpoint to `path` (created); returns it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = slice_config(layers, experts, **overrides)
    if not mtp:
        cfg["num_nextn_predict_layers"] = 0
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    for fname, spec in shard_specs(cfg, mtp).items():
        tensors = {}
        for name, (shape, init) in spec.items():
            tensors[name] = _init(shape, init, tensor_key(seed, name))
        mx.eval(tensors)
        mx.save_safetensors(str(path / fname), tensors)
        del tensors
    return path


def slice_nbytes(cfg: dict, mtp: bool = True) -> int:
    total = 0
    for spec in shard_specs(cfg, mtp).values():
        for shape, _ in spec.values():
            n = 4
            for d in shape:
                n *= d
            total += n
    return total


def link_slice(src, dst, layers: int, mtp: bool = True) -> Path:
    """A shallower slice in `dst` made of hard links to `src`'s shard files (no copy)."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((src / "config.json").read_text())
    if layers > cfg["num_hidden_layers"]:
        raise ValueError(f"{src} has {cfg['num_hidden_layers']} layers, asked for {layers}")
    cfg["num_hidden_layers"] = layers
    if not mtp:
        cfg["num_nextn_predict_layers"] = 0
    for f in dst.glob("*.safetensors"):
        f.unlink()
    for fname in shard_specs(cfg, mtp):
        target = dst / fname
        try:
            os.link(src / fname, target)
        except OSError:
            os.symlink((src / fname).resolve(), target)
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return dst
