"""Showing a streamed reply.

`MarkdownStream` renders markdown the way a terminal can bear it: each finished
block (a paragraph ended by a blank line, a closed code fence) is printed once, as
rich Markdown, into the scrollback; only the unfinished tail stays live, cut to
what fits on the screen, so nothing is hidden or printed twice however long the
answer grows. `PlainStream` writes the text as it comes (pipes, --plain).
Model text never goes through rich markup, and on a terminal its control characters
are shown escaped (`printable`): a model can emit ESC or a backspace, which would
otherwise move the cursor or change the terminal's state.
"""

from __future__ import annotations

from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.text import Text

FENCES = ("```", "~~~")
# C0 controls but tab and newline, DEL, and the C1 controls
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]
             if c not in (0x09, 0x0A)}


def printable(text: str) -> str:
    """`text` with its control characters escaped (\\x1b), tab and newline kept."""
    return text.translate(_CONTROLS)


class PlainStream:
    def __init__(self, console: Console):
        self.console, self.ended_with_newline = console, True

    def feed(self, text: str):
        if text:
            if self.console.is_terminal:
                text = printable(text)
            self.console.file.write(text)
            self.console.file.flush()
            self.ended_with_newline = text.endswith("\n")

    def finish(self):
        if not self.ended_with_newline:
            self.console.file.write("\n")
            self.console.file.flush()


def split_finished(text: str) -> tuple[str, str]:
    """(finished blocks, unfinished tail): the cut is after the last blank line or
    closing fence that lies outside a code fence."""
    cut, fence, pos = 0, None, 0
    for line in text.splitlines(keepends=True):
        pos += len(line)
        if not line.endswith("\n"):
            break  # an unfinished line never ends a block
        stripped = line.strip()
        marker = next((f for f in FENCES if stripped.startswith(f)), None)
        if fence is None and marker:
            fence = marker
        elif fence is not None and stripped.startswith(fence) and stripped.strip("`~") == "":
            fence = None
            cut = pos
        elif fence is None and stripped == "":
            cut = pos
    return text[:cut], text[cut:]


class MarkdownStream:
    def __init__(self, console: Console, refresh_per_second: int = 12):
        self.console = console
        self.pending = ""
        self.live = Live(Text(""), console=console, refresh_per_second=refresh_per_second,
                         transient=True, auto_refresh=True, vertical_overflow="crop")
        self.live.start()

    def feed(self, text: str):
        if not text:
            return
        self.pending += printable(text)
        done, self.pending = split_finished(self.pending)
        if done.strip():
            self.live.console.print(Markdown(done))
        self.live.update(self._tail())

    def _tail(self) -> Text:
        """The unfinished block's last screenful (wrapped as the terminal will)."""
        room = max(self.console.size.height - 2, 3)
        rows = Text(self.pending).wrap(self.console, self.console.width)
        return Text("\n").join(rows[-room:])

    def finish(self):
        self.live.update(Text(""))
        self.live.stop()
        if self.pending.strip():
            self.console.print(Markdown(self.pending))
        self.pending = ""


def make_stream(console: Console, markdown: bool):
    if markdown and console.is_terminal:
        return MarkdownStream(console)
    return PlainStream(console)
