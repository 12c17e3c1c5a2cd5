"""`qwen3next chat [MODEL]`: an interactive chat in the terminal."""

from __future__ import annotations

from typing import Optional

import typer
from rich.text import Text

from mlx_qwen3next.checkpoints import hub

from . import options as o
from . import ranks
from .console import err, out
from .lineinput import make_reader
from .repl import ChatRepl
from .split_repl import SplitRepl


@o.generation_options
def chat(
    model: Optional[str] = o.MODEL,
    plain: bool = typer.Option(False, "--plain", help="Stream raw text instead of rendered markdown."),
    *,
    opts: o.GenerationOptions,
):
    """Chat with a model: streamed markdown replies, history, slash commands (/help).

    Ctrl-C stops a reply and keeps the conversation; Ctrl-D leaves.
    """
    from mlx_qwen3next import ChatSession
    from mlx_qwen3next.generation.prompt_cache import PromptCache

    link = ranks.join(opts.distributed)
    path, mdl, tokenizer = o.open_model(model, opts.dtype, opts.mtp, opts.split)
    # the prompt cache evicts by bytes, which differ between ranks: split, it is off
    session = ChatSession(mdl, tokenizer, system=opts.system, max_tokens=opts.max_tokens or 2048,
                          mtp=opts.mtp, draft_tokens=opts.draft_tokens, tools=opts.tool_list,
                          prompt_cache=PromptCache() if link is None else None,
                          **opts.sampling())
    mtp_on = getattr(mdl, "has_mtp", False) and opts.mtp is not False
    head = "MTP speculative decoding on" if mtp_on else ""
    err.print(Text.assemble((path.name, "bold"), f" ready{' · ' + head if head else ''} · /help for "
                            "commands, Ctrl-C stops a reply, Ctrl-D leaves", style="dim"))
    reader = make_reader(hub.app_home() / "chat_history") if ranks.leader(link) else None
    if link is None:
        ChatRepl(session, reader, out, err, markdown=not plain).run()
    else:
        SplitRepl(link, session, reader, out, err, markdown=not plain).run()
