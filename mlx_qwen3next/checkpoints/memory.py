"""Memory: will the model fit before we load it, what the KV cache costs, and the
macOS wired-memory limit while generating (as mlx-lm's `wired_limit` does).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import Optional

import mlx.core as mx

GB = 1024**3


class InsufficientMemoryError(MemoryError):
    """The model (plus working memory) does not fit in this machine's memory."""


def checkpoint_bytes(path) -> int:
    """Bytes of weights in a checkpoint directory (its safetensors shards)."""
    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
            if total:
                return int(total)
        except (OSError, json.JSONDecodeError, ValueError):
            pass
    shards = list(path.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"{path}: no *.safetensors files")
    return sum(f.stat().st_size for f in shards)


def available_memory() -> int:
    """Bytes the model may use: Metal's recommended working set on a Mac, else
    MemAvailable (Linux) or the physical memory."""
    if mx.metal.is_available():
        size = mx.device_info().get("max_recommended_working_set_size")
        if size:
            return int(size)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(path_or_size, available: Optional[int] = None, overhead: float = 0.10,
               extra: int = 0) -> int:
    """Raise InsufficientMemoryError unless the weights fit; return the bytes needed.

    `path_or_size`: a checkpoint directory or a byte count. The need is the
    weights plus `overhead` (activations, the MoE's working set) plus `extra`
    (e.g. the KV cache for the intended context). `available` defaults to
    `available_memory()`; pass a number to plan for another machine.
    """
    weights = path_or_size if isinstance(path_or_size, int) else checkpoint_bytes(path_or_size)
    needed = int(weights * (1 + overhead)) + int(extra)
    have = available_memory() if available is None else int(available)
    if needed > have:
        where = "" if isinstance(path_or_size, int) else f"{path_or_size}: "
        raise InsufficientMemoryError(
            f"{where}the model needs about {needed / GB:.1f} GB but only {have / GB:.1f} GB "
            "is available; use a more strongly quantized conversion (4-bit experts need "
            "about 45 GB) or free memory"
        )
    return needed


def kv_bytes_per_token(config, dtype=mx.bfloat16, kv_bits: Optional[int] = None,
                       group_size: int = 64) -> float:
    """KV-cache bytes one token adds: 2 * attention layers * kv heads * head_dim * bytes.

    With kv_bits, elements take bits/8 bytes plus a scale and a bias (in `dtype`)
    per group of `group_size`.
    """
    layers = sum(t == "full_attention" for t in config.layer_types)
    elems = 2 * layers * config.num_key_value_heads * config.head_dim
    if kv_bits is None:
        return elems * dtype.size
    return elems * (kv_bits / 8 + 2 * dtype.size / group_size)


def model_bytes(model) -> int:
    from mlx.utils import tree_flatten

    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


@contextlib.contextmanager
def wired_limit(model=None, needed: Optional[int] = None):
    """While inside, raise Metal's wired-memory limit so the weights stay resident.

    The limit becomes `needed` bytes (default: the model's bytes plus 10%), capped
    at the device's recommended working set, and the old limit comes back on exit.
    Off Metal (Linux, CPU) this does nothing.
    """
    if not mx.metal.is_available():
        yield
        return
    max_rec = mx.device_info().get("max_recommended_working_set_size")
    if not max_rec:
        yield
        return
    if needed is None:
        needed = int(model_bytes(model) * 1.1) if model is not None else max_rec
    if needed > 0.9 * max_rec:
        warnings.warn(
            f"the model needs {needed / GB:.1f} GB, close to this Mac's recommended "
            f"maximum of {max_rec / GB:.1f} GB; generation may be slow",
            stacklevel=3,
        )
    old = mx.set_wired_limit(min(max(needed, 0), max_rec))
    try:
        yield
    finally:
        mx.synchronize()
        mx.set_wired_limit(old)


def describe_bytes(n: float) -> str:
    for unit, size in (("GB", GB), ("MB", 1024**2), ("KB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


__all__ = [
    "InsufficientMemoryError", "available_memory", "check_fits", "checkpoint_bytes",
    "describe_bytes", "kv_bytes_per_token", "model_bytes", "wired_limit",
]
