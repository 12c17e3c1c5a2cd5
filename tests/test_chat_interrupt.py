"""Ctrl-C during a long prefill in the chat stops within one prefill chunk, not after the
whole prompt, and the session drops the turn and stays usable (the REPL's own handler,
a real SIGINT)."""

from __future__ import annotations

import io
import os
import signal

import pytest
from rich.console import Console

import mlx_qwen3next  # noqa: F401
from mlx_qwen3next import ChatSession, load
from mlx_qwen3next.cli.repl import ChatRepl


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return load(tiny_checkpoint)


def test_ctrl_c_in_prefill_stops_at_the_chunk(tiny):
    model, tok = tiny
    chunks = []

    def progress(done, total):
        chunks.append(done)
        if len(chunks) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while chunk 3 would start

    session = ChatSession(model, tok, temperature=0.0, max_tokens=4, mtp=False,
                          prefill_step_size=32, progress=progress)
    notes = io.StringIO()
    repl = ChatRepl(session, None, Console(file=io.StringIO()), Console(file=notes))
    long_message = "the quick brown fox jumps over the lazy dog " * 40
    repl.reply(session.send(long_message))
    total = len(tok.encode(long_message))
    assert len(chunks) == 2 and total > 10 * 32  # stopped, with many chunks still to go
    assert "stopped before the first token" in notes.getvalue()
    assert session.messages == [] and session.cache.offset == 0
    session.progress = None
    clean = ChatSession(model, tok, temperature=0.0, max_tokens=4, mtp=False)
    assert [r.token for r in session.send("Hello")] == [r.token for r in clean.send("Hello")]
    assert len(session.messages) == 2
