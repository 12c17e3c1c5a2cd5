"""`qwen3next convert SOURCE`: quantize a model into the models folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mlx_qwen3next.checkpoints import hub

from .console import note, out
from .download import fetch_with_progress


def convert(
    source: str = typer.Argument(hub.DEFAULT_REPO, help="Model folder or Hub repo id."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Where to write (default: the models folder)."),
    recipe: str = typer.Option("4bit", "--recipe", "-r", help="4bit, 8bit or mixed-3-4."),
    bits: Optional[int] = typer.Option(None, "--bits", help="Bits for every tensor but the gates (default: the recipe's)."),
    group_size: Optional[int] = typer.Option(None, "--group-size", help="32, 64 or 128 (default 64)."),
    max_memory: Optional[str] = typer.Option(
        None, "--max-memory", help="Fit the converted weights in this much, e.g. 40GB (default: no limit)."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
    check: bool = typer.Option(False, "--check", help="Compare with the source afterwards (KL, top-1)."),
    download: bool = typer.Option(True, "--download/--no-download", help="Fetch SOURCE if it is a repo not yet here."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Convert a checkpoint to quantized MLX (into the models folder by default).

    The default recipe puts routed experts at 4 bits and the router and shared-expert
    gate at 8; conversion streams, so memory holds one chunk at a time.
    """
    from mlx_qwen3next.quantize import convert as run_convert

    path = _source_path(source, download, quiet)
    target = output or hub.default_output(source, recipe, bits)
    result = run_convert(
        path, target, recipe, bits=bits, group_size=group_size, max_memory=max_memory,
        force=force, progress=not quiet,
    )
    if quiet:
        note(result.summary())
    if check:
        from mlx_qwen3next.quantize import check as run_check, format_check

        note(format_check(run_check(path, result.path)), style="")
    name = result.path.name if result.path.parent == hub.models_dir().resolve() else str(result.path)
    note(f"chat with it: qwen3next chat {name}", style="bold")
    out.print(str(result.path), markup=False)


def _source_path(source: str, download: bool, quiet: bool) -> Path:
    try:
        return hub.resolve(source)
    except hub.HubError:
        if not (download and hub.is_repo_id(source) and not Path(source).exists()):
            raise
    note(f"{source} is not here yet: downloading it first")
    return fetch_with_progress(source, quiet=quiet)
