"""Reading what the user types in `chat`.

In a terminal: prompt_toolkit, with line editing, a history file that survives
restarts (`$QWEN3NEXT_HOME/chat_history`) and multi-line input (Alt+Enter or
Esc then Enter for a new line; pasted text keeps its newlines; a message that
starts with three quotes runs until a line that ends with three quotes). Elsewhere
(pipes, tests): plain lines from stdin with the same three-quote blocks.

`read()` returns the text, or None at end of input (Ctrl-D); Ctrl-C at the
prompt raises KeyboardInterrupt for the caller to shrug off.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

QUOTES = '"""'
PROMPT = ">>> "
MORE = "... "


def open_block(text: str) -> bool:
    """True while a three-quote block is still open."""
    stripped = text.strip()
    return stripped.startswith(QUOTES) and (len(stripped) < 6 or not stripped.endswith(QUOTES))


def unquote(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith(QUOTES) and stripped.endswith(QUOTES) and len(stripped) >= 6:
        return stripped[3:-3].strip("\n")
    return text


class PlainReader:
    def __init__(self, stream=None, echo=None):
        self.stream = stream or sys.stdin
        self.echo = echo or sys.stdout

    def _line(self, prompt: str) -> Optional[str]:
        self.echo.write(prompt)
        self.echo.flush()
        line = self.stream.readline()
        return None if line == "" else line.rstrip("\n")

    def read(self) -> Optional[str]:
        text = self._line(PROMPT)
        while text is not None and open_block(text):
            more = self._line(MORE)
            if more is None:
                break
            text += "\n" + more
        return None if text is None else unquote(text)


class TerminalReader:
    def __init__(self, history: Path):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.key_binding import KeyBindings

        history.parent.mkdir(parents=True, exist_ok=True)
        keys = KeyBindings()

        @keys.add("enter")
        def _(event):
            buf = event.current_buffer
            if open_block(buf.text):
                buf.insert_text("\n")
            else:
                buf.validate_and_handle()

        @keys.add("escape", "enter")
        def _(event):
            event.current_buffer.insert_text("\n")

        self.session = PromptSession(
            history=FileHistory(str(history)), key_bindings=keys, multiline=True,
            prompt_continuation=lambda width, line, soft: MORE.rjust(width),
            enable_history_search=True,
        )

    def read(self) -> Optional[str]:
        try:
            text = self.session.prompt(PROMPT)
        except EOFError:
            return None
        return unquote(text)


def make_reader(history: Path):
    if sys.stdin.isatty() and sys.stdout.isatty():
        return TerminalReader(history)
    return PlainReader()
