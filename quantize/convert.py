"""Streaming conversion: original Hub checkpoint -> quantized MLX directory.

Tensors are read in chunks of rows (a few experts at a time), quantized and
written straight to their planned place in the output shards, so memory holds one
chunk, whatever the model's depth. Everything goes to `.NAME.converting-PID`
beside the target, with config.json written last, and is renamed into place only
when complete: an interrupted run leaves no directory that looks loadable, and
the next run removes the leftovers of dead runs and starts clean.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .errors import ConvertError
from .plan import Plan, make_plan
from .progress import Progress
from .recipe import format_size
from .st_io import ShardWriter

DEFAULT_SHARD_BYTES = 5 * 10**9
CHUNK_BYTES = 64 * 2**20  # source bytes quantized at once
PREFETCH_CHUNKS = 2  # chunks the kernel is asked to read ahead
_SKIP = {"config.json", "model.safetensors.index.json"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


@dataclass
class ConvertResult:
    path: Path
    size_bytes: int
    num_params: int
    bits_per_weight: float
    recipe: str
    seconds: float
    quantization: dict
    kept_float: list = field(default_factory=list)

    def summary(self) -> str:
        text = (f"{self.path}: {format_size(self.size_bytes)}, "
                f"{self.bits_per_weight:.2f} bits per weight (recipe {self.recipe}), "
                f"{self.seconds:.1f} s")
        return text + kept_float_note(self.kept_float)


def kept_float_note(modules: list) -> str:
    if not modules:
        return ""
    shown = ", ".join(modules[:3]) + (f" and {len(modules) - 3} more" if len(modules) > 3 else "")
    return (f"; kept in float, as the group size does not divide their input dimension: "
            f"{shown}")


def convert(
    source,
    target,
    recipe: str = "4bit",
    *,
    bits: Optional[int] = None,
    group_size: Optional[int] = None,
    max_memory=None,
    force: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: bool = True,
    on_progress: Optional[Callable[[int, int, str], None]] = None,
) -> ConvertResult:
    """Convert the checkpoint at `source` into `target`; raise ConvertError on bad
    input or a failed write (then nothing is left at `target`)."""
    start = time.perf_counter()
    source, target = Path(source).resolve(), Path(target).resolve()
    _check_target(source, target, force)
    plan = make_plan(source, recipe, bits, group_size, max_memory)
    bar = Progress(sum(t.source_bytes for t in plan.tensors), progress, on_progress)
    bar.say(
        f"Converting {source.name} -> {target} with recipe {plan.recipe.name}: "
        f"estimated {format_size(plan.size_bytes)} ({plan.bits_per_weight:.2f} bits per weight)"
    )
    _check_space(target, plan.size_bytes)
    tmp = _fresh_temp(target)
    writer = ShardWriter(tmp, plan.entries, shard_bytes)
    try:
        with bar:
            _write_tensors(plan, writer, bar)
        writer.close()
        _write_metadata(plan, writer, tmp)
        _install(tmp, target)
    except OSError as e:
        writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        reason = e.strerror or str(e)
        raise ConvertError(
            f"writing {target} failed: {reason} (needs {format_size(plan.size_bytes)}); "
            "nothing was kept"
        ) from None
    except BaseException:
        writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        plan.reader.close()
    result = ConvertResult(
        target,
        writer.total_bytes,
        plan.num_params,
        plan.bits_per_weight,
        plan.recipe.name,
        time.perf_counter() - start,
        plan.quantization,
        plan.kept_float,
    )
    bar.say(result.summary())
    return result


def _write_tensors(plan: Plan, writer: ShardWriter, bar: Progress):
    chunks = [
        (group, lo, min(group[0].rows, lo + step))
        for group in _groups(plan.tensors)
        for step in [max(1, CHUNK_BYTES // max(sum(t.row_bytes for t in group), 1))]
        for lo in range(0, group[0].rows, step)
    ]

    def prefetch(i):  # the kernel reads chunk i while we quantize earlier ones
        if i < len(chunks):
            group, lo, hi = chunks[i]
            for t in group:
                t.prefetch(plan.reader, lo, hi)

    for i in range(PREFETCH_CHUNKS):
        prefetch(i)
    for i, (group, lo, hi) in enumerate(chunks):
        prefetch(i + PREFETCH_CHUNKS)
        bar.unit(group[0].name)
        for t in group:
            _convert_rows(t, plan, writer, lo, hi)
            bar.advance((hi - lo) * t.row_bytes)


def _groups(tensors: list) -> list[list]:
    """A layer's stacked experts go together, a chunk of experts at a time, so that
    reading walks each expert's tensors together instead of the layer three times."""
    groups: list[list] = []
    for t in tensors:
        prev = groups[-1][0] if groups else None
        if prev and t.op == prev.op == "stack" and t.unit == prev.unit and t.rows == prev.rows:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


def _convert_rows(t, plan: Plan, writer: ShardWriter, lo: int, hi: int):
    import mlx.core as mx

    w = t.read(plan.reader, lo, hi)
    if t.quant is not None:
        q, s, b = mx.quantize(w, group_size=t.quant.group_size, bits=t.quant.bits)
        parts = [(f"{t.module}.weight", q), (f"{t.module}.scales", s), (f"{t.module}.biases", b)]
    else:
        parts = [(t.name, w)]
    mx.eval(*[a for _, a in parts])
    for name, a in parts:
        writer.write(name, a, row=lo)


def _write_metadata(plan: Plan, writer: ShardWriter, tmp: Path):
    index = {"metadata": {"total_size": writer.total_bytes}, "weight_map": writer.weight_map}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    for f in sorted(plan.source.iterdir()):
        if f.is_file() and f.name not in _SKIP and not f.name.startswith(".") and not f.name.endswith(_WEIGHT_SUFFIXES):
            shutil.copy2(f, tmp / f.name)
    config = dict(plan.config)
    quant = plan.quantization
    if quant:
        config["quantization"] = quant
        config["quantization_config"] = quant
    (tmp / "config.json").write_text(json.dumps(config, indent=2))  # last: marks it complete


def _check_target(source: Path, target: Path, force: bool):
    if target == source or target in source.parents:
        raise ConvertError(f"the output {target} must not be the source or contain it")
    if target.exists():
        empty = target.is_dir() and not any(target.iterdir())
        if not empty and not force:
            raise ConvertError(f"{target} exists and is not empty (use --force to replace it)")


def _check_space(target: Path, need: int):
    probe = target.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise ConvertError(
            f"not enough disk space at {probe}: the output needs {format_size(need)}, "
            f"{format_size(free)} is free"
        )


def _fresh_temp(target: Path) -> Path:
    """A new scratch directory beside `target`; removes those of dead runs."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for old in target.parent.glob(f".{target.name}.converting-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    tmp = target.parent / f".{target.name}.converting-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # an earlier, failed call of this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _install(tmp: Path, target: Path):
    """Move the finished directory into place (replacing an old target)."""
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        tmp.rename(target)
        return
    old = target.parent / f".{target.name}.replaced-{os.getpid()}"
    target.rename(old)
    tmp.rename(target)
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()
