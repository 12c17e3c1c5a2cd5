"""Progress of a conversion: a rich bar (bytes, speed, ETA) on stderr, or silence,
plus an optional callback for callers that draw their own."""

from __future__ import annotations

from typing import Callable, Optional


class Progress:
    def __init__(
        self,
        total: int,
        show: bool = True,
        callback: Optional[Callable[[int, int, str], None]] = None,
    ):
        self.total, self.done, self.name = total, 0, ""
        self.callback = callback
        self._bar = self._task = None
        if show:
            from rich.console import Console

            from mlx_qwen3next.checkpoints.progress import bytes_progress

            self._console = Console(stderr=True)
            self._bar = bytes_progress(self._console, transient=False)

    def say(self, text: str):
        if self._bar is not None:
            self._console.print(text, markup=False, highlight=False)

    def __enter__(self):
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task("converting", total=self.total)
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()

    def unit(self, name: str):
        self.name = name
        if self._bar is not None:
            short = ".".join(p for p in name.split(".")[:3] if p != "weight")
            self._bar.update(self._task, description=short)

    def advance(self, nbytes: int):
        self.done += nbytes
        if self._bar is not None:
            self._bar.advance(self._task, nbytes)
        if self.callback is not None:
            self.callback(self.done, self.total, self.name)
