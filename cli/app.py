"""The `qwen3next` app: one Typer group, one file per command."""

from __future__ import annotations

import typer

from .cache_prompt import cache_prompt
from .chat import chat
from .convert import convert
from .demo import demo
from .download import download
from .errors import OneLineErrors
from .generate import generate
from .info import info
from .models import models
from .serve import serve

app = typer.Typer(
    name="qwen3next",
    cls=OneLineErrors,
    help="Qwen3-Next-80B-A3B on your machine with MLX: download, convert, chat.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for command in (download, convert, chat, generate, serve, info, models, demo):
    app.command()(command)
app.command("cache-prompt")(cache_prompt)


def main():
    app()
