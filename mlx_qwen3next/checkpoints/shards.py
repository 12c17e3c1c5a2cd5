"""Find and open a checkpoint's safetensors shards, checking them before anything is read.

Opening is lazy: `mx.load` maps each tensor to a load that runs on first use,
so every tensor is read once, when the model evaluates it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import mlx.core as mx


class LoadError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file or tensor."""


def shard_files(path: Path) -> list[Path]:
    """The shard files, from the index when there is one."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise LoadError(f"{index}: not a valid safetensors index ({e})") from None
        files = [path / name for name in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise LoadError(f"{f}: shard listed in {index.name} is missing")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise LoadError(f"{path}: no .safetensors weight files")
    return files


def check_safetensors(file: Path) -> dict:
    """Validate the header and the file size; return the header's tensor table."""
    size = file.stat().st_size
    try:
        with open(file, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > size - 8:
                raise ValueError("header is longer than the file")
            header = json.loads(fh.read(n))
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise LoadError(f"{file}: not a valid safetensors file ({e})") from None
    header.pop("__metadata__", None)
    end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if 8 + n + end > size:
        raise LoadError(
            f"{file}: truncated ({size} bytes, header says {8 + n + end}); download it again"
        )
    return header


def open_shards(path: Path) -> dict[str, mx.array]:
    """All tensors of the checkpoint, lazily; a tensor in two shards is an error."""
    weights: dict[str, mx.array] = {}
    for file in shard_files(path):
        check_safetensors(file)
        try:
            tensors = mx.load(str(file))
        except Exception as e:  # mlx raises RuntimeError/ValueError with no file name
            raise LoadError(f"{file}: cannot read ({e})") from None
        for name, array in tensors.items():
            if name in weights:
                raise LoadError(f"{file}: tensor {name} also appears in another shard")
            weights[name] = array
    return weights
