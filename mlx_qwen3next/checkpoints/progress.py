"""Progress of the byte-sized jobs on checkpoints (downloads, conversions): one rich bar
(bytes, speed, time left), and for downloads a stand-in for tqdm that huggingface_hub
drives (`tqdm_class`), drawing files done and bytes written on that bar."""

from __future__ import annotations

import threading
from typing import Optional

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def bytes_progress(console, transient: bool = True) -> Progress:
    """A bar of bytes done, with speed and time left, drawn on `console`."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def tqdm_for(progress: Optional[Progress]):
    """A tqdm-like class for huggingface_hub: its byte bars feed one task of
    `progress`; its file-count bar shows in that task's description. With
    `progress` None it draws nothing."""
    lock = threading.RLock()
    state = {"task": None, "files": 0, "of": None}

    def task() -> int:
        with lock:
            if state["task"] is None:
                state["task"] = progress.add_task("downloading", total=None)
            return state["task"]

    def describe():
        of = state["of"]
        files = f" ({state['files']}/{of} files)" if of else ""
        progress.update(task(), description=f"downloading{files}")

    class RichTqdm:
        def __init__(self, *args, total=None, desc="", unit="it", initial=0, **kwargs):
            self.desc, self.n, self._total = str(desc or ""), 0, None
            # the Hub's "Downloading bytes" bar repeats the bytes one: ignore it
            self.kind = None if self.desc.startswith("Downloading bytes") or progress is None else (
                "bytes" if unit == "B" else "files")
            self.total = total
            if initial:
                self.update(initial)

        @property
        def total(self):
            return self._total

        @total.setter
        def total(self, value):
            self._total = value
            if self.kind == "bytes" and value:
                progress.update(task(), total=value)
            elif self.kind == "files" and value is not None:
                state["of"] = value
                describe()

        def update(self, n=1):
            n = n or 0
            self.n += n
            if self.kind == "bytes" and n:
                progress.advance(task(), n)
            elif self.kind == "files" and n:
                state["files"] += n
                describe()

        def refresh(self, *args, **kwargs):
            pass

        set_description = set_description_str = set_postfix_str = set_postfix = refresh
        set_transfer_postfix_str = update_transfer = close = refresh

        @property
        def format_dict(self):
            return {"rate": None}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    return RichTqdm
