"""Load a Qwen3-Next checkpoint: the original Hub layout or a converted (mlx-lm layout) one.

Original checkpoints are mapped as they load: one tensor per expert is stacked
into switch_mlp.*, conv1d weights move to MLX's [C, K, 1], and zero-centred norm
weights get their +1. Converted checkpoints already have all that and may be
quantized: their modules are rebuilt from config.json's quantization block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from . import hub
from .shards import LoadError, open_shards
from .tokenizer import load_tokenizer
from ..config import ModelConfig
from .device import specialise as fit_to_device
from ..model import Model
from ..model.norms import is_zero_centred
from .names import hub_to_mlx


def load_model(path, dtype: Optional[str] = None, mtp: bool = True, lazy: bool = False,
               specialise: bool = True) -> Model:
    """Build the model from a checkpoint directory; `dtype` casts float weights.

    With `lazy`, weights stay unread until first used (see layerwise.py). With
    `specialise` (the default), the model is fitted to the device (device.py);
    leave it off to train or to run the plain modules.
    """
    check_dtype(dtype)
    path = find(path)
    cfg = read_config(path)
    weights = lazy_weights(path, cfg, dtype, mtp)
    model = Model(cfg, mtp=any(k.startswith("mtp.") for k in weights))
    if cfg.quantization:
        quantize_like(model, cfg.quantization, weights)
    check_weights(model, weights, path)
    model.load_weights(list(weights.items()), strict=False)
    del weights  # the model holds them now; joining products frees each part as it goes
    model.eval()
    if not lazy:
        mx.eval(model.parameters())
    return fit_to_device(model, join=not lazy) if specialise else model


def read_config(path: Path) -> ModelConfig:
    if not path.is_dir():
        raise LoadError(f"{path}: not a directory")
    return ModelConfig.from_file(path)  # a ConfigError names config.json and the field


def lazy_weights(path: Path, cfg: ModelConfig, dtype: Optional[str] = None,
                 mtp: bool = True) -> dict:
    """Every tensor under the model's names and conventions, not yet read from disk."""
    weights = open_shards(path)
    if not is_converted(weights):
        weights = from_original(weights, cfg)
    weights = cast_floats(weights, getattr(mx, dtype) if dtype is not None else None)
    if not mtp:
        weights = {k: v for k, v in weights.items() if not k.startswith("mtp.")}
    return weights


def load(path, dtype: Optional[str] = None, mtp: bool = True):
    """(model, tokenizer) from a folder, a name in the models folder or a downloaded Hub
    repo id, as the CLI takes them; the tokenizer is mlx-lm's TokenizerWrapper."""
    path = find(path)
    model = load_model(path, dtype=dtype, mtp=mtp)
    return model, load_tokenizer(path, model.config)


DTYPES = ("bfloat16", "float16", "float32")


def check_dtype(dtype):
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")


def find(name) -> Path:
    """The folder `name` stands for: itself if it exists, else what hub.resolve finds."""
    path = Path(name).expanduser()
    return path if path.exists() else hub.resolve(str(name))


def is_converted(weights: dict) -> bool:
    return any(".switch_mlp." in k for k in weights) or not any(
        ".experts." in k or "conv1d" in k for k in weights
    )


def from_original(weights: dict, cfg: ModelConfig) -> dict:
    """Map the Hub checkpoint's names and conventions to this model's (names.py)."""
    out, experts = {}, {}
    for name, w in weights.items():
        to = hub_to_mlx(name, w.shape)
        if to.op == "stack":
            experts.setdefault(to.name, {})[to.expert] = (name, w)
            continue
        if to.op == "conv":
            w = w.moveaxis(2, 1)
        elif to.op == "norm":
            w = w.astype(mx.float32) + 1.0
        out[to.name] = w
    for stacked, by_index in experts.items():
        missing = sorted(set(range(cfg.num_experts)) - set(by_index))
        if missing:
            prefix, proj = stacked.rsplit(".switch_mlp.", 1)
            raise LoadError(f"missing tensor {prefix}.experts.{missing[0]}.{proj}")
        extra = sorted(set(by_index) - set(range(cfg.num_experts)))
        if extra:
            raise LoadError(f"unexpected tensor {by_index[extra[0]][0]}")
        out[stacked] = mx.stack([by_index[e][1] for e in range(cfg.num_experts)])
    return out


def quantize_like(model: nn.Module, qcfg: dict, weights: dict):
    """Turn the modules that were quantized on disk into quantized modules, as mlx-lm does."""
    defaults = {k: qcfg[k] for k in ("group_size", "bits", "mode") if k in qcfg}

    def predicate(path, module):
        override = qcfg.get(path)
        if isinstance(override, dict):
            return {**defaults, **override}
        if override is False or not hasattr(module, "to_quantized"):
            return False
        return f"{path}.scales" in weights

    nn.quantize(model, class_predicate=predicate, **defaults)


def check_weights(model: nn.Module, weights: dict, path: Path):
    expected = dict(tree_flatten(model.parameters()))
    for name in sorted(expected):
        if name not in weights:
            raise LoadError(f"{path}: missing tensor {name}")
    for name in sorted(weights):
        if name not in expected:
            raise LoadError(f"{path}: unexpected tensor {name}")
        if tuple(weights[name].shape) != tuple(expected[name].shape):
            raise LoadError(
                f"{path}: tensor {name} has shape {tuple(weights[name].shape)}, "
                f"expected {tuple(expected[name].shape)}"
            )
        floats = mx.issubdtype(expected[name].dtype, mx.floating)
        if floats and not mx.issubdtype(weights[name].dtype, mx.floating):
            raise LoadError(f"{path}: tensor {name} is {weights[name].dtype}, expected a float")


def cast_floats(weights: dict, dtype) -> dict:
    """Float weights in `dtype`; quantization scales and the zero-centred norms (float32,
    see model/norms.py) excepted."""
    def cast(name, w):
        if name.endswith((".scales", ".biases")) or not mx.issubdtype(w.dtype, mx.floating):
            return w
        if is_zero_centred(name) and w.ndim == 1:
            return w.astype(mx.float32)
        return w if dtype is None else w.astype(dtype)

    return {k: cast(k, v) for k, v in weights.items()}
