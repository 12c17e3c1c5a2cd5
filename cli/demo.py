"""`qwen3next demo`: the whole pipeline on a tiny random model, no network needed."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import typer
from rich.panel import Panel
from rich.text import Text

from .console import err, out, size
from .repl import ChatRepl

BANNER = ("RANDOM WEIGHTS: this is a tiny Qwen3-Next with the real architecture and file "
          "layout but random weights, so its replies are gibberish by design. It shows that "
          "building, converting, loading and chatting work on this machine.")


class ScriptReader:
    """Feeds the scripted lines to the chat loop as if typed."""

    def __init__(self, lines, console):
        self.lines, self.console = list(lines), console

    def read(self) -> Optional[str]:
        if not self.lines:
            return None
        line = self.lines.pop(0)
        self.console.print(Text.assemble((">>> ", "bold"), (line, "bold cyan")))
        return line


def demo(
    keep: Optional[Path] = typer.Option(None, "--keep", help="Build in this folder and keep it."),
    max_tokens: int = typer.Option(40, "--max-tokens", "-m", min=1, help="Tokens per reply."),
    recipe: str = typer.Option("4bit", "--recipe", "-r", help="Conversion recipe."),
):
    """Build, convert and chat with a tiny random Qwen3-Next (no network, no model needed).

    The converted model stays in the models folder, so `qwen3next chat` can open it after."""
    from mlx_qwen3next import ChatSession, load
    from mlx_qwen3next.checkpoints import hub
    from mlx_qwen3next.testing.demo import NAME, SCRIPT, build

    out.print(Panel(Text(BANNER), title="qwen3next demo", border_style="yellow"), soft_wrap=False)
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="qwen3next-demo-"))
    try:
        t0 = time.perf_counter()
        with err.status("building a tiny random checkpoint and converting it ..."):
            source, result = build(work, hub.models_dir() / f"{NAME}-{recipe}", recipe)
        out.print(Text(f"1. wrote a tiny random checkpoint in the Hub layout: {source} "
                       f"({size(_weights(source))} of bf16 weights)"))
        out.print(Text(f"2. converted it with the real converter: {result.summary()}"))
        with err.status("loading ..."):
            model, tokenizer = load(result.path)
        out.print(Text(f"3. loaded it ({time.perf_counter() - t0:.1f} s so far); "
                       "a scripted chat through the real pipeline (random weights!):"))
        session = ChatSession(model, tokenizer, max_tokens=max_tokens, seed=0)  # card sampling
        ChatRepl(session, ScriptReader(SCRIPT, out), out, out).run()
        out.print(Text(f"demo done in {time.perf_counter() - t0:.1f} s. The demo model stays in "
                       f"the models folder: `qwen3next chat {result.path.name}` talks to it. "
                       "For the real one: `qwen3next convert`, then `qwen3next chat`.",
                       style="bold"))
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _weights(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))
