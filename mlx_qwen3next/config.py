"""ModelConfig: the model's hyper-parameters, read from a checkpoint's config.json.

Accepts the Hub style (top-level rope_theta / partial_rotary_factor / rope_scaling,
full_attention_interval) and the transformers-v5 style (rope_parameters, layer_types).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional


class ConfigError(ValueError):
    """A config.json that this model cannot run."""


@dataclass
class ModelConfig:
    vocab_size: int = 151936
    hidden_size: int = 2048
    intermediate_size: int = 5120
    num_hidden_layers: int = 48
    num_attention_heads: int = 16
    num_key_value_heads: int = 2
    head_dim: int = 256
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    rope_theta: float = 10_000_000.0
    partial_rotary_factor: float = 0.25
    rope_scaling: Optional[dict] = None
    max_position_embeddings: int = 262144
    linear_conv_kernel_dim: int = 4
    linear_key_head_dim: int = 128
    linear_value_head_dim: int = 128
    linear_num_key_heads: int = 16
    linear_num_value_heads: int = 32
    decoder_sparse_step: int = 1
    mlp_only_layers: list = field(default_factory=list)
    moe_intermediate_size: int = 512
    shared_expert_intermediate_size: int = 512
    num_experts: int = 512
    num_experts_per_tok: int = 10
    norm_topk_prob: bool = True
    layer_types: list = field(default_factory=list)
    num_nextn_predict_layers: int = 0
    bos_token_id: Optional[int] = None
    eos_token_id: Any = None
    model_type: str = "qwen3_next"
    quantization: Optional[dict] = None

    def __post_init__(self):
        check_fields(self)
        if not self.layer_types:
            self.layer_types = full_attention_pattern(self.num_hidden_layers, 4)
        if len(self.layer_types) != self.num_hidden_layers:
            raise ConfigError(
                f"layer_types has {len(self.layer_types)} entries for "
                f"{self.num_hidden_layers} layers"
            )
        bad = set(self.layer_types) - {"linear_attention", "full_attention"}
        if bad:
            raise ConfigError(f"unknown layer type(s) in layer_types: {sorted(bad)}")
        if self.linear_num_value_heads % self.linear_num_key_heads:
            raise ConfigError(
                "linear_num_value_heads must be a multiple of linear_num_key_heads"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError("num_attention_heads must be a multiple of num_key_value_heads")
        check_relations(self)

    # -- derived sizes ------------------------------------------------------
    def is_linear(self, layer: int) -> bool:
        return self.layer_types[layer] == "linear_attention"

    def is_moe(self, layer: int) -> bool:
        return (
            layer not in self.mlp_only_layers
            and self.num_experts > 0
            and (layer + 1) % self.decoder_sparse_step == 0
        )

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def eos_token_ids(self) -> list[int]:
        eos = self.eos_token_id
        if eos is None:
            return []
        return list(eos) if isinstance(eos, (list, tuple)) else [eos]

    # -- construction -------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict) -> "ModelConfig":
        raw = dict(raw)
        model_type = raw.get("model_type")
        if model_type != "qwen3_next":
            raise ConfigError(
                f"model_type is {model_type!r}, expected 'qwen3_next' (Qwen3-Next)"
            )
        rope = raw.pop("rope_parameters", None)
        if isinstance(rope, dict):
            raw.setdefault("rope_theta", rope.get("rope_theta", cls.rope_theta))
            raw.setdefault(
                "partial_rotary_factor",
                rope.get("partial_rotary_factor", cls.partial_rotary_factor),
            )
            if rope.get("rope_type", "default") not in ("default", None):
                scaling = {
                    k: v
                    for k, v in rope.items()
                    if k not in ("rope_theta", "partial_rotary_factor")
                }
                raw.setdefault("rope_scaling", scaling)
        if not raw.get("layer_types"):
            n = raw.get("num_hidden_layers", cls.num_hidden_layers)
            interval = raw.get("full_attention_interval", 4)
            for name, value in (("num_hidden_layers", n), ("full_attention_interval", interval)):
                if not _is_int(value) or value < 1:
                    raise ConfigError(f"{name} must be a positive integer, got {value!r}")
            raw["layer_types"] = full_attention_pattern(n, interval)
        raw["mlp_only_layers"] = raw.get("mlp_only_layers") or []
        raw.setdefault("quantization", raw.get("quantization_config"))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"{path}: no config.json found")
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: cannot read config ({e})") from None
        try:
            return cls.from_dict(raw)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        except TypeError as e:
            raise ConfigError(f"{path}: bad config value ({e})") from None


POSITIVE_INTS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "head_dim",
                 "max_position_embeddings", "linear_conv_kernel_dim", "linear_key_head_dim",
                 "linear_value_head_dim", "linear_num_key_heads", "linear_num_value_heads",
                 "decoder_sparse_step", "moe_intermediate_size",
                 "shared_expert_intermediate_size")
COUNTS = ("num_experts", "num_experts_per_tok", "num_nextn_predict_layers")
POSITIVE_FLOATS = ("rms_norm_eps", "rope_theta", "partial_rotary_factor")
BOOLS = ("tie_word_embeddings", "attention_bias", "norm_topk_prob")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_fields(cfg: "ModelConfig"):
    """Each field's type and range; ConfigError naming the field."""
    for name in POSITIVE_INTS + COUNTS:
        v = getattr(cfg, name)
        low = 1 if name in POSITIVE_INTS else 0
        if not _is_int(v) or v < low:
            kind = "a positive" if low else "a non-negative"
            raise ConfigError(f"{name} must be {kind} integer, got {v!r}")
    for name in POSITIVE_FLOATS:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v <= 0:
            raise ConfigError(f"{name} must be a finite number > 0, got {v!r}")
    for name in BOOLS:
        if not isinstance(getattr(cfg, name), bool):
            raise ConfigError(f"{name} must be true or false, got {getattr(cfg, name)!r}")
    for name in ("layer_types", "mlp_only_layers"):
        if not isinstance(getattr(cfg, name), list):
            raise ConfigError(f"{name} must be a list, got {getattr(cfg, name)!r}")
    if not all(_is_int(i) and 0 <= i < cfg.num_hidden_layers for i in cfg.mlp_only_layers):
        raise ConfigError(f"mlp_only_layers must list layer numbers below num_hidden_layers "
                          f"({cfg.num_hidden_layers}), got {cfg.mlp_only_layers!r}")
    for name in ("rope_scaling", "quantization"):
        v = getattr(cfg, name)
        if v is not None and not isinstance(v, dict):
            raise ConfigError(f"{name} must be an object, got {v!r}")
    for i in [cfg.bos_token_id] + cfg.eos_token_ids:
        if i is not None and (not _is_int(i) or not 0 <= i < cfg.vocab_size):
            raise ConfigError(f"token ids must be integers below vocab_size "
                              f"({cfg.vocab_size}), got {i!r}")


def check_relations(cfg: "ModelConfig"):
    """Rules across fields; ConfigError naming them."""
    if cfg.num_experts and not 1 <= cfg.num_experts_per_tok <= cfg.num_experts:
        raise ConfigError(f"num_experts_per_tok ({cfg.num_experts_per_tok}) must be between "
                          f"1 and num_experts ({cfg.num_experts})")
    if cfg.partial_rotary_factor > 1:
        raise ConfigError(f"partial_rotary_factor must be <= 1, got {cfg.partial_rotary_factor}")
    if cfg.rotary_dim < 2 or cfg.rotary_dim % 2:
        raise ConfigError(f"head_dim * partial_rotary_factor ({cfg.rotary_dim}) must be an "
                          f"even number >= 2")


def full_attention_pattern(num_layers: int, interval: int) -> list[str]:
    """Layer i is full attention iff (i + 1) % interval == 0."""
    return [
        "full_attention" if (i + 1) % interval == 0 else "linear_attention"
        for i in range(num_layers)
    ]
