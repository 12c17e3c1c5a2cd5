"""Tiny random Qwen3-Next checkpoints in the real Hugging Face layout.

The tests and `qwen3next demo` use these: the same tensor names, shapes (scaled
down), one tensor per expert, sharded safetensors with an index, a hub-style
config.json and a small byte-level BPE tokenizer with the ChatML tokens. The
weights are random; the point is to run the real loading and model code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .tokenizer_files import write_tokenizer

# The real model's config.json (Qwen/Qwen3-Next-80B-A3B-Instruct), hub style.
REAL_CONFIG = {
    "architectures": ["Qwen3NextForCausalLM"],
    "model_type": "qwen3_next",
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 5120,
    "num_hidden_layers": 48,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "head_dim": 256,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "rope_theta": 10000000,
    "partial_rotary_factor": 0.25,
    "max_position_embeddings": 262144,
    "linear_conv_kernel_dim": 4,
    "linear_key_head_dim": 128,
    "linear_value_head_dim": 128,
    "linear_num_key_heads": 16,
    "linear_num_value_heads": 32,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "moe_intermediate_size": 512,
    "shared_expert_intermediate_size": 512,
    "num_experts": 512,
    "num_experts_per_tok": 10,
    "norm_topk_prob": True,
    "full_attention_interval": 4,
    "hidden_act": "silu",
    "num_nextn_predict_layers": 1,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "torch_dtype": "bfloat16",
}

# The same layout scaled down: one 3:1 block, tiny heads and experts.
TINY_CONFIG = {
    **{k: v for k, v in REAL_CONFIG.items() if k not in ("bos_token_id", "eos_token_id")},
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 48,
    "num_experts": 8,
    "num_experts_per_tok": 2,
}


def tiny_config(**overrides) -> dict:
    cfg = dict(TINY_CONFIG)
    cfg.update(overrides)
    return cfg


def random_weights(cfg: dict, seed: int = 0, mtp: bool = True) -> dict[str, np.ndarray]:
    """Float32 random weights under the original checkpoint's names."""
    rng = np.random.default_rng(seed)
    w: dict[str, np.ndarray] = {}
    H, V = cfg["hidden_size"], cfg["vocab_size"]

    def linear(name, out_dim, in_dim, gain=1.0):
        w[name] = rng.normal(0, gain / np.sqrt(in_dim), (out_dim, in_dim))

    def norm(name, dim, centred=True):
        # zero-centred norms store w (applied as 1 + w); perturb both kinds
        base = 0.0 if centred else 1.0
        w[name] = base + rng.normal(0, 0.2, (dim,))

    w["model.embed_tokens.weight"] = rng.normal(0, 1.0, (V, H))
    for i in range(cfg["num_hidden_layers"]):
        _layer(w, f"model.layers.{i}", cfg, i, linear, norm, rng)
    norm("model.norm.weight", H)
    if not cfg.get("tie_word_embeddings"):
        linear("lm_head.weight", V, H, gain=4.0)
    if mtp:
        linear("mtp.fc.weight", H, 2 * H)
        norm("mtp.pre_fc_norm_embedding.weight", H)
        norm("mtp.pre_fc_norm_hidden.weight", H)
        norm("mtp.norm.weight", H)
        full = dict(cfg, layer_types=None, full_attention_interval=1)
        _layer(w, "mtp.layers.0", full, 0, linear, norm, rng)
    return {k: v.astype(np.float32) for k, v in w.items()}


def _is_linear_layer(cfg: dict, i: int) -> bool:
    types = cfg.get("layer_types")
    if types:
        return types[i] == "linear_attention"
    return (i + 1) % cfg.get("full_attention_interval", 4) != 0


def _layer(w, p, cfg, i, linear, norm, rng):
    H = cfg["hidden_size"]
    norm(f"{p}.input_layernorm.weight", H)
    norm(f"{p}.post_attention_layernorm.weight", H)
    if _is_linear_layer(cfg, i):
        _deltanet(w, f"{p}.linear_attn", cfg, linear, norm, rng)
    else:
        _attention(w, f"{p}.self_attn", cfg, linear, norm)
    moe = i not in cfg.get("mlp_only_layers", []) and cfg["num_experts"] > 0 and (
        (i + 1) % cfg.get("decoder_sparse_step", 1) == 0
    )
    if moe:
        _moe(w, f"{p}.mlp", cfg, linear)
    else:
        _mlp(w, f"{p}.mlp", H, cfg["intermediate_size"], linear)


def _attention(w, p, cfg, linear, norm):
    H, nh, nkv, hd = (
        cfg["hidden_size"],
        cfg["num_attention_heads"],
        cfg["num_key_value_heads"],
        cfg["head_dim"],
    )
    linear(f"{p}.q_proj.weight", nh * hd * 2, H)
    linear(f"{p}.k_proj.weight", nkv * hd, H)
    linear(f"{p}.v_proj.weight", nkv * hd, H)
    linear(f"{p}.o_proj.weight", H, nh * hd)
    norm(f"{p}.q_norm.weight", hd)
    norm(f"{p}.k_norm.weight", hd)


def _deltanet(w, p, cfg, linear, norm, rng):
    H = cfg["hidden_size"]
    nk, nv = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"]
    dk, dv = cfg["linear_key_head_dim"], cfg["linear_value_head_dim"]
    conv_dim = 2 * nk * dk + nv * dv
    linear(f"{p}.in_proj_qkvz.weight", 2 * nk * dk + 2 * nv * dv, H)
    linear(f"{p}.in_proj_ba.weight", 2 * nv, H)
    w[f"{p}.conv1d.weight"] = rng.normal(0, 0.5, (conv_dim, 1, cfg["linear_conv_kernel_dim"]))
    w[f"{p}.dt_bias"] = rng.normal(0, 0.5, (nv,))
    w[f"{p}.A_log"] = np.log(rng.uniform(0.5, 8.0, (nv,)))
    norm(f"{p}.norm.weight", dv, centred=False)
    linear(f"{p}.out_proj.weight", H, nv * dv)


def _mlp(w, p, hidden, inter, linear):
    linear(f"{p}.gate_proj.weight", inter, hidden)
    linear(f"{p}.up_proj.weight", inter, hidden)
    linear(f"{p}.down_proj.weight", hidden, inter)


def _moe(w, p, cfg, linear):
    H = cfg["hidden_size"]
    linear(f"{p}.gate.weight", cfg["num_experts"], H, gain=2.0)
    for e in range(cfg["num_experts"]):
        _mlp(w, f"{p}.experts.{e}", H, cfg["moe_intermediate_size"], linear)
    _mlp(w, f"{p}.shared_expert", H, cfg["shared_expert_intermediate_size"], linear)
    linear(f"{p}.shared_expert_gate.weight", 1, H)


def write_checkpoint(
    path: str | Path,
    cfg: dict | None = None,
    weights: dict[str, np.ndarray] | None = None,
    dtype: str = "bfloat16",
    num_shards: int = 2,
    seed: int = 0,
    mtp: bool = True,
    tokenizer: bool = True,
) -> Path:
    """Write a random checkpoint in the original Hub layout; return its path."""
    import mlx.core as mx

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = dict(cfg or tiny_config())
    if weights is None:
        weights = random_weights(cfg, seed=seed, mtp=mtp)
    cfg["torch_dtype"] = dtype
    if not mtp:
        cfg.pop("num_nextn_predict_layers", None)
    mx_dtype = getattr(mx, dtype)
    names = sorted(weights)
    shards = [names[i::num_shards] for i in range(num_shards)]
    weight_map, total = {}, 0
    for s, shard in enumerate(shards):
        fname = f"model-{s + 1:05d}-of-{num_shards:05d}.safetensors"
        arrays = {n: mx.array(weights[n]).astype(mx_dtype) for n in shard}
        mx.save_safetensors(str(path / fname), arrays, metadata={"format": "pt"})
        total += sum(a.nbytes for a in arrays.values())
        weight_map.update({n: fname for n in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    if tokenizer:
        special = write_tokenizer(path)
        cfg.setdefault("bos_token_id", special["<|endoftext|>"])
        cfg.setdefault("eos_token_id", special["<|im_end|>"])
        gen = {
            "bos_token_id": special["<|endoftext|>"],
            "eos_token_id": [special["<|im_end|>"], special["<|endoftext|>"]],
            "pad_token_id": special["<|endoftext|>"],
            "do_sample": True,
            "temperature": 0.7,
            "top_p": 0.8,
            "top_k": 20,
        }
        (path / "generation_config.json").write_text(json.dumps(gen, indent=2))
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    return path
