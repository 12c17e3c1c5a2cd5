"""The CLI under mlx.launch: every rank runs the same command; rank 0 talks to the user.

`join` enters the group (when there is one) and silences the other ranks' stdout and
notes; their errors still reach stderr. Rank 0 reads the prompt or the chat's lines
and passes them on (`from_rank0`), so every rank runs the same generation.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable, Optional

from .console import err, note, out, size


def join(mode: Optional[str]):
    """This process's Link into the group, or None when it runs alone."""
    from mlx_qwen3next.distributed import init

    link = init(mode)
    if link is not None and link.rank != 0:
        sys.stdout = open(os.devnull, "w")
        out.quiet = err.quiet = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # rank 0 decides when a reply stops
    return link


def leader(link) -> bool:
    return link is None or link.rank == 0


def from_rank0(link, read: Callable[[], Optional[str]]) -> Optional[str]:
    """What `read()` returns on rank 0, on every rank. An error raised by `read` on rank 0
    is raised there and ends the other ranks quietly (exit 1)."""
    if link is None:
        return read()
    if link.rank != 0:
        text = link.text_from_rank0(None)
        if text is None:
            raise SystemExit(1)
        return text
    try:
        text = read()
    except BaseException:
        link.text_from_rank0(None)
        raise
    link.text_from_rank0(text)
    return text


def describe_ranks(model):
    """One line on rank 0's stderr: each rank's layers, pid and weights."""
    from mlx_qwen3next.distributed import gather_reports

    reports = gather_reports(model)
    parts = [f"rank {r['rank']} layers {r['layers'][0]}-{r['layers'][1] - 1} "
             f"(pid {r['pid']}, {size(r['weight_bytes'])} of weights)" for r in reports]
    note(f"pipeline over {len(reports)} ranks: " + ", ".join(parts))


def alone_only(name: str, link):
    if link is not None:
        raise ValueError(f"{name} does not run split across ranks yet; "
                         "run it with --distributed off, or without mlx.launch")
