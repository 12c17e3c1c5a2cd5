"""A tiny random Qwen3-Next in the real Hub layout, converted with the real converter:
the quick model of the tests and the benchmarks (the demo runs the trained one shipped
in mlx_qwen3next/assets). No network, no downloaded model; the replies are gibberish.
"""

from __future__ import annotations

from pathlib import Path

from .tiny import tiny_config, write_checkpoint

# group size 64 must divide every quantized input dimension
DEMO_CONFIG = tiny_config(moe_intermediate_size=64, shared_expert_intermediate_size=64)
NAME = "qwen3next-tiny-random"


def build(workdir, target=None, recipe: str = "4bit", progress: bool = False,
          on_progress=None):
    """Write the tiny bf16 checkpoint (as the Hub ships the real one) under `workdir` and
    convert it into `target` (default: beside it, named f"{NAME}-{recipe}"), replacing an
    earlier demo model there; returns (source dir, ConvertResult)."""
    from ..quantize import convert

    workdir = Path(workdir)
    source = write_checkpoint(workdir / NAME, DEMO_CONFIG, dtype="bfloat16", seed=0)
    target = Path(target) if target is not None else workdir / f"{NAME}-{recipe}"
    result = convert(source, target, recipe, force=True, progress=progress,
                     on_progress=on_progress)
    return source, result
