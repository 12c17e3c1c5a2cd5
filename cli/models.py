"""`qwen3next models`: the Qwen3-Next models on this machine."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from mlx_qwen3next.checkpoints import hub

from .console import note, out, size


def models():
    """List the models here: converted ones (models folder) and downloads (Hub cache)."""
    found = hub.list_models()
    if not found:
        note(f"no models yet in {hub.models_dir()} or the Hub cache: try `qwen3next demo`, "
             "or `qwen3next download` then `qwen3next convert " + hub.DEFAULT_REPO + "`")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("name", "kind", "weights", "size", "path"):
        table.add_column(col, justify="right" if col == "size" else "left",
                         no_wrap=col != "path", overflow="fold")
    for m in found:
        kind = "converted" if m.source == "converted" else "downloaded"
        if m.problem:
            kind = "broken"
        table.add_row(*(Text(c) for c in (m.name, kind, m.quantization, size(m.size_bytes), str(m.path))))
    out.print(table)
    for m in found:
        if m.problem:
            note(f"{m.name} cannot be loaded: {m.problem}")
    note(f"models folder: {hub.models_dir()} (set QWEN3NEXT_HOME to move it)")
