"""The source checkpoint checked before anything is written: every shard the index
names, every tensor the model needs (name, shape, a float dtype), nothing extra, and
the tokenizer files. The model definition is the loader's (checkpoints/names.py)."""

from __future__ import annotations

from pathlib import Path

from mlx_qwen3next.checkpoints.names import model_tensors
from mlx_qwen3next.checkpoints.shards import LoadError, check_safetensors, shard_files
from mlx_qwen3next.config import ModelConfig

from .errors import ConvertError
from .layout import OutTensor

FLOATS = ("BF16", "F16", "F32")
TOKENIZER = "tokenizer_config.json"
VOCABULARY = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def source_shards(source: Path) -> list[Path]:
    """The shard files (from the index when there is one), each header checked."""
    try:
        files = shard_files(source)
        for f in files:
            check_safetensors(f)
    except LoadError as e:
        raise ConvertError(str(e)) from None
    return files


def check_tensors(source: Path, tensors: list[OutTensor], infos: dict, cfg: ModelConfig):
    """The planned tensors against the model: same names, shapes, float sources."""
    for name, info in infos.items():
        if info.dtype not in FLOATS:
            raise ConvertError(f"{info.file}: tensor {name} is {info.dtype}, expected a float "
                               f"({', '.join(FLOATS)})")
    mtp = any(t.name.startswith("mtp.") for t in tensors)
    expected = model_tensors(cfg, mtp)
    planned = {t.name: t for t in tensors}
    for name in expected:
        if name not in planned:
            raise ConvertError(f"{source}: missing tensor {_hub_name(name)}")
    for name, t in planned.items():
        file = infos[t.sources[0]].file
        if name not in expected:
            raise ConvertError(f"{file}: unexpected tensor {t.sources[0]}")
        if tuple(t.shape) != expected[name]:
            raise ConvertError(f"{file}: tensor {t.sources[0]} has shape "
                               f"{_source_shape(t, infos)}, expected {_hub_shape(t, expected[name])}")


def check_tokenizer(source: Path):
    if not (source / TOKENIZER).is_file():
        raise ConvertError(f"{source}: {TOKENIZER} is missing (the tokenizer is needed)")
    if not any(all((source / f).is_file() for f in files) for files in VOCABULARY):
        raise ConvertError(f"{source}: tokenizer.json is missing (or vocab.json and merges.txt)")


def _hub_name(name: str) -> str:
    """The Hub name of a model tensor (experts: any of them)."""
    if ".switch_mlp." in name:
        return name.replace(".switch_mlp.", ".experts.*.")
    return name


def _source_shape(t: OutTensor, infos: dict) -> tuple:
    return infos[t.sources[0]].shape


def _hub_shape(t: OutTensor, shape: tuple) -> tuple:
    """An expected model shape in the source's layout."""
    if t.op == "stack":
        return shape[1:]
    if t.op == "conv":
        c, k, _ = shape
        return (c, 1, k)
    return shape
