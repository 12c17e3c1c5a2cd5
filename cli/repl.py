"""The chat loop: read a line, run a slash command or stream a reply, show stats.

Ctrl-C while a reply streams only raises a flag (a SIGINT handler), the loop stops
at the next token and closes the stream: the session keeps the conversation, with
the partial reply (as ChatSession documents). Before the first token (the prefill)
there is no token to stop at, so Ctrl-C is a KeyboardInterrupt at once, which MLX
delivers when the current prefill chunk is evaluated; the session drops the turn.
A second Ctrl-C before the stream notices is one too, also caught here. Ctrl-C at
the prompt clears the line; Ctrl-D or /exit leaves.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import termios
import threading
from pathlib import Path

from rich.console import Console
from rich.text import Text

from . import slash
from .render import make_stream
from .console import size
from .stats import plural, stats_line


@contextlib.contextmanager
def keys_not_echoed(stream=None):
    """While a reply streams, keys typed at a terminal are not echoed into it (the tty
    would print them inside the reply and break the live redraw). They stay queued, so
    the next prompt receives them."""
    stream = stream if stream is not None else sys.stdin
    try:
        fd = stream.fileno()
        if not os.isatty(fd):
            raise OSError
        before = termios.tcgetattr(fd)
    except (OSError, ValueError, AttributeError, termios.error):
        yield
        return
    quiet = list(before)
    quiet[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, before)


@contextlib.contextmanager
def sigint_flag(at_once=lambda: False):
    """While inside, the first Ctrl-C sets the yielded Event; the next raises, and so
    does the first while `at_once()` holds."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set() or at_once():
            raise KeyboardInterrupt
        flag.set()

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, old)


class ChatRepl:
    interrupt_prefill = True  # Ctrl-C before the first token stops at once

    def __init__(self, session, reader, console: Console, notes: Console, markdown: bool = True):
        self.session, self.reader = session, reader
        self.console, self.notes, self.markdown = console, notes, markdown

    def say(self, text: str, style: str = "dim"):
        self.notes.print(Text(text, style=style))

    def run(self):
        while True:
            try:
                line = self.reader.read()
            except KeyboardInterrupt:
                self.say("(Ctrl-D or /exit to leave)")
                continue
            if line is None:
                break
            if not line.strip():
                continue
            try:
                if not self.handle(line):
                    break
            except (ValueError, OSError) as e:
                from .errors import describe

                self.say(f"error: {describe(e)}", style="red")

    def handle(self, line: str) -> bool:
        """Run one input line; False means leave."""
        command = slash.parse(line)
        if command is None:
            self.reply(self.session.send(slash.message_text(line)))
            return True
        name, arg = command
        if name == "exit":
            return False
        getattr(self, f"do_{name.replace('-', '_')}")(arg)
        return True

    def reply(self, stream):
        out = make_stream(self.console, self.markdown)
        last, drafted, stopped, pieces = None, 0, False, []
        try:
            with keys_not_echoed(), sigint_flag(
                    at_once=lambda: self.interrupt_prefill and last is None) as interrupted:
                for last in stream:
                    out.feed(last.text)
                    pieces.append(last.text)
                    drafted += bool(getattr(last, "from_draft", False))
                    if self.stop_now(interrupted):
                        stopped = True
                        break
        except KeyboardInterrupt:
            stopped = True
        finally:
            stream.close()
            out.finish()
        if last is None:
            self.say("(stopped before the first token: the message was dropped)" if stopped
                     else "(no reply)")
            return
        st = self.session.stats
        self.say(stats_line(st.prompt_tokens, st.ttft, last.generation_tokens, last.generation_tps,
                            st.context_used, st.max_context, drafted,
                            getattr(self.session, "draft_tokens", 1), stopped))
        self._tool_hint("".join(pieces))

    def _tool_hint(self, text: str):
        from mlx_qwen3next.server.tools import split_tool_calls

        names = [c["function"]["name"] for c in split_tool_calls(text)[1]]
        if names:
            self.say(f"the model called {', '.join(names)}: give the result with /tool TEXT")

    def stop_now(self, interrupted) -> bool:
        """After each token: whether the reply stops there (Ctrl-C was pressed)."""
        return interrupted.is_set()

    # -- slash commands -------------------------------------------------------
    def do_help(self, arg):
        self.say(slash.help_text(), style="")

    def do_system(self, arg):
        if not arg:
            self.say(f"system prompt: {self.session.system!r}", style="")
            return
        self.session.set("system", arg)
        self.session.clear()
        self.say("system prompt set; conversation cleared")

    def do_clear(self, arg):
        self.session.clear()
        self.say("conversation cleared")

    def do_undo(self, arg):
        text = self.session.undo()
        self.say(f"took back: {text[:60]!r}" + ("..." if len(text) > 60 else ""))

    def do_retry(self, arg):
        self.reply(self.session.retry())

    def do_tool(self, arg):
        self.reply(self.session.tool_result(_need(arg, "/tool TEXT")))

    def do_save(self, arg):
        path = Path(_need(arg, "/save FILE")).expanduser()
        self.session.save(path)
        self.say(f"saved {len(self.session.messages)} messages to {path}")

    def do_load(self, arg):
        path = Path(_need(arg, "/load FILE")).expanduser()
        self.session.load(path)
        messages = self.session.messages
        self.say(f"loaded {len(messages)} messages from {path}")
        for m in messages[-4:]:
            self.say(f"  {m['role']}: {_short(m['content'])}")

    def do_save_cache(self, arg):
        path = Path(_need(arg, "/save-cache FILE")).expanduser()
        self.session.save_cache(path)
        self.say(f"saved the conversation's cache ({len(self.session.tokens):,} tokens) "
                 f"to {path}")

    def do_load_cache(self, arg):
        path = Path(_need(arg, "/load-cache FILE")).expanduser()
        self.session.load_cache(path)
        self.say(f"resumed {len(self.session.messages)} messages from {path} "
                 f"({len(self.session.tokens):,} tokens, no prefill)")

    def do_stats(self, arg):
        st = self.session.stats
        self.say(f"context {st.context_used:,} of {st.max_context:,} tokens; cache "
                 f"{size(st.cache_bytes)} + snapshots {size(st.snapshot_bytes)}; last turn "
                 f"{plural(st.prompt_tokens, 'prompt token')}, first token after "
                 f"{st.ttft:.2f} s, {plural(st.generation_tokens, 'token')} at "
                 f"{st.generation_tps:.1f} tok/s; peak memory {size(st.peak_memory * 1e9)}",
                 style="")
        settings = ", ".join(f"{k}={v}" for k, v in self.session.settings.items() if k != "system")
        self.say(f"settings: {settings}", style="")

    def do_set(self, arg):
        key, _, value = arg.partition(" ")
        if not key or not value.strip():
            raise ValueError("usage: /set KEY VALUE (see /help)")
        self.session.set(key, slash.parse_value(value.strip()))
        self.say(f"{key} = {self.session.settings.get(key)!r}")


def _need(arg: str, usage: str) -> str:
    if not arg:
        raise ValueError(f"usage: {usage}")
    return arg


def _short(text: str, n: int = 70) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 3] + "..."
