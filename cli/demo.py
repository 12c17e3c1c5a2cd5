"""`qwen3next demo`: the whole pipeline on the tiny trained model shipped with the
package, no network needed: convert it, load it, chat with it (a tool call included)."""

from __future__ import annotations

import time
from typing import Optional

import typer
from rich.panel import Panel
from rich.text import Text

from .console import err, out, size
from .repl import ChatRepl

NAME = "qwen3next-tiny"
BANNER = ("A TINY TRAINED MODEL: the real Qwen3-Next architecture and file layout at 5M "
          "parameters, trained for 45 minutes on a CPU to do four things only: add and "
          "subtract numbers below 100, call a weather tool, answer from the tool's result, "
          "and say what it is. It knows nothing else.")
# It was trained on one-turn chats: /clear starts each question afresh.
SCRIPT = ("Who are you?", "/clear", "What is 56 + 65?", "/clear", "What is 12 - 58?")
TOOL_SCRIPT = ("What's the weather in Lyon?", '/tool {"temperature": 18, "condition": "sunny"}',
               "/stats")


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
    max_tokens: int = typer.Option(64, "--max-tokens", "-m", min=1, help="Tokens per reply."),
    recipe: str = typer.Option("4bit", "--recipe", "-r", help="Conversion recipe."),
):
    """Convert the tiny trained Qwen3-Next shipped with the package and chat with it.

    The converted model stays in the models folder, so `qwen3next chat` can open it after."""
    from mlx_qwen3next import ChatSession, load
    from mlx_qwen3next.assets import TINY, WEATHER_TOOL
    from mlx_qwen3next.checkpoints import hub
    from mlx_qwen3next.quantize import convert

    out.print(Panel(Text(BANNER), title="qwen3next demo", border_style="yellow"), soft_wrap=False)
    t0 = time.perf_counter()
    with err.status("converting the tiny model ..."):
        # group 32: the tiny model's 32-wide expert inputs are quantized too
        result = convert(TINY, hub.models_dir() / f"{NAME}-{recipe}", recipe, group_size=32,
                         force=True, progress=False)
    out.print(Text(f"1. the shipped checkpoint, in the Hub layout: {TINY} "
                   f"({size(_weights(TINY))} of bf16 weights, trained with training/)"))
    out.print(Text(f"2. converted it with the real converter: {result.summary()}"))
    with err.status("loading ..."):
        model, tokenizer = load(result.path)
    out.print(Text(f"3. loaded it ({time.perf_counter() - t0:.1f} s so far); a scripted chat "
                   "through the real pipeline:"))
    session = ChatSession(model, tokenizer, max_tokens=max_tokens)
    ChatRepl(session, ScriptReader(SCRIPT, out), out, out).run()
    out.print(Text("4. a new chat with the get_weather tool offered:"))
    session = ChatSession(model, tokenizer, max_tokens=max_tokens, tools=[WEATHER_TOOL])
    ChatRepl(session, ScriptReader(TOOL_SCRIPT, out), out, out).run()
    out.print(Text(f"demo done in {time.perf_counter() - t0:.1f} s. The demo model stays in "
                   f"the models folder: `qwen3next chat {result.path.name}` talks to it "
                   "(add `--tools FILE` to offer it the weather tool). For the real one: "
                   "`qwen3next convert`, then `qwen3next chat`.", style="bold"))


def _weights(path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))
