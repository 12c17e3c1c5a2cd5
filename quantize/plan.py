"""The conversion plan: every output tensor with its bits, the exact output size,
and the quantization block for config.json. Built from the safetensors headers
alone, so every error about the recipe or the shapes comes before any writing."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mlx_qwen3next.config import ConfigError, ModelConfig

from .errors import ConvertError
from .layout import OutTensor, plan_tensors
from .recipe import QuantSpec, Recipe, fit_to_memory, layer_of, make_recipe, parse_size
from .source import check_tensors, check_tokenizer, source_shards
from .st_io import Entry, SourceReader


@dataclass
class Plan:
    source: Path
    config: dict  # the source config.json, as read
    recipe: Recipe
    tensors: list  # OutTensor, in writing order
    reader: SourceReader
    kept_float: list  # modules the recipe would quantize, kept in float (group size)

    @property
    def entries(self) -> list[Entry]:
        return [e for t in self.tensors for e in t.entries()]

    @property
    def size_bytes(self) -> int:
        return sum(t.nbytes() for t in self.tensors)

    @property
    def num_params(self) -> int:
        return sum(t.num_params for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.size_bytes / max(self.num_params, 1)

    @property
    def quantization(self) -> dict:
        """mlx-lm's block: the most common spec at top level, the others per module."""
        specs = {t.module: t.quant for t in self.tensors if t.quant is not None}
        if not specs:
            return {}
        weight = Counter()
        for t in self.tensors:
            if t.quant is not None:
                weight[t.quant] += t.num_params
        default: QuantSpec = weight.most_common(1)[0][0]
        block = default.as_config()
        for module, spec in specs.items():
            if spec != default:
                block[module] = spec.as_config()
        return block


def read_source_config(source: Path) -> tuple[dict, ModelConfig]:
    if not source.is_dir():
        raise ConvertError(f"{source}: not a directory")
    try:
        cfg = ModelConfig.from_file(source)
    except ConfigError as e:
        raise ConvertError(str(e)) from None
    raw = json.loads((source / "config.json").read_text())
    if raw.get("quantization") or raw.get("quantization_config"):
        raise ConvertError(f"{source}: the checkpoint is already quantized")
    return raw, cfg


def make_plan(
    source,
    recipe="4bit",
    bits: Optional[int] = None,
    group_size: Optional[int] = None,
    max_memory=None,
) -> Plan:
    source = Path(source)
    raw, cfg = read_source_config(source)
    if isinstance(recipe, Recipe):
        rec = recipe
    else:
        rec = make_recipe(recipe, cfg.num_hidden_layers, bits, group_size)
    budget = parse_size(max_memory) if max_memory is not None else None
    reader = SourceReader(source_shards(source))
    tensors = plan_tensors(reader.tensors)
    check_tensors(source, tensors, reader.tensors, cfg)
    check_tokenizer(source)
    unfit = [t for t in tensors if t.quantizable and t.shape[-1] % rec.group_size]
    if unfit and group_size is not None:
        t = unfit[0]
        raise ConvertError(f"group size {group_size} does not divide the input dimension "
                           f"{t.shape[-1]} of {t.module}")
    quantized = {t.name for t in tensors if t.quantizable} - {t.name for t in unfit}
    if budget is not None:
        layers = sorted({layer_of(t.module) for t in tensors if ".switch_mlp." in t.name})
        rec = fit_to_memory(rec, budget, layers, cfg.num_hidden_layers,
                            lambda r: _size_with(tensors, r, quantized))
    for t in tensors:
        t.quant = rec.spec(t.module) if t.name in quantized else None
    return Plan(source, raw, rec, tensors, reader, [t.module for t in unfit])


def _size_with(tensors: list[OutTensor], recipe: Recipe, quantized: set) -> int:
    return sum(t.nbytes(recipe.spec(t.module) if t.name in quantized else None)
               for t in tensors)
