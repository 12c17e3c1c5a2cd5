"""`qwen3next chat [MODEL]`: an interactive chat in the terminal."""

from __future__ import annotations

from typing import Optional

import typer
from rich.text import Text

from mlx_qwen3next import hub

from . import options as o
from .console import err, out
from .lineinput import make_reader
from .repl import ChatRepl


def chat(
    model: Optional[str] = o.MODEL,
    system: Optional[str] = o.SYSTEM,
    max_tokens: Optional[int] = o.MAX_TOKENS,
    temperature: Optional[float] = o.TEMPERATURE,
    top_p: Optional[float] = o.TOP_P,
    top_k: Optional[int] = o.TOP_K,
    min_p: Optional[float] = o.MIN_P,
    presence_penalty: Optional[float] = o.PRESENCE,
    seed: Optional[int] = o.SEED,
    mtp: Optional[bool] = o.MTP,
    dtype: Optional[str] = o.DTYPE,
    plain: bool = typer.Option(False, "--plain", help="Stream raw text instead of rendered markdown."),
):
    """Chat with a model: streamed markdown replies, history, slash commands (/help).

    Ctrl-C stops a reply and keeps the conversation; Ctrl-D leaves.
    """
    from mlx_qwen3next import ChatSession

    path, mdl, tokenizer = o.open_model(model, dtype, mtp)
    session = ChatSession(
        mdl, tokenizer, system=system, max_tokens=max_tokens or 2048, mtp=mtp,
        **o.sampling(temperature, top_p, top_k, min_p, presence_penalty, seed))
    head = "MTP speculative decoding on" if getattr(mdl, "has_mtp", False) and mtp is not False else ""
    err.print(Text.assemble((path.name, "bold"), f" ready{' · ' + head if head else ''} · /help for "
                            "commands, Ctrl-C stops a reply, Ctrl-D leaves", style="dim"))
    reader = make_reader(hub.app_home() / "chat_history")
    ChatRepl(session, reader, out, err, markdown=not plain).run()
