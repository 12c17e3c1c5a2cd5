"""Options shared by `chat`, `generate` and `demo`, and loading the model they name."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mlx_qwen3next import hub

from .console import err

MODEL = typer.Argument(None, help="Model folder, name in the models folder, or Hub repo id "
                                  "(default: the newest converted model).")
SYSTEM = typer.Option(None, "--system", "-s", help="System prompt.")
MAX_TOKENS = typer.Option(None, "--max-tokens", "-m", min=1, help="Stop after this many tokens.")
TEMPERATURE = typer.Option(None, "--temperature", "--temp", "-t", help="0 is greedy (default 0.7).")
TOP_P = typer.Option(None, "--top-p", help="Nucleus sampling (default 0.8).")
TOP_K = typer.Option(None, "--top-k", help="Top-k sampling, 0 off (default 20).")
MIN_P = typer.Option(None, "--min-p", help="Min-p sampling, 0 off.")
PRESENCE = typer.Option(None, "--presence-penalty", help="0 to 2 against repeats.")
SEED = typer.Option(None, "--seed", help="Random seed for sampling.")
MTP = typer.Option(None, "--mtp/--no-mtp", help="Speculative decoding with the MTP head "
                                               "(default: on when the model has one).")
DTYPE = typer.Option(None, "--dtype", help="Cast float weights, e.g. float32.")


def sampling(temperature, top_p, top_k, min_p, presence_penalty, seed) -> dict:
    given = dict(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                 presence_penalty=presence_penalty, seed=seed)
    return {k: v for k, v in given.items() if v is not None}


def pick_model(name: Optional[str]) -> Path:
    if name:
        return hub.resolve(name)
    found = hub.default_model()
    if found is None:
        raise hub.HubError(
            "no model here yet: try `qwen3next demo` (tiny, random), or `qwen3next convert "
            f"{hub.DEFAULT_REPO}` to download and convert the real one")
    return found.path


def open_model(name: Optional[str], dtype: Optional[str] = None, mtp: Optional[bool] = None):
    """(path, model, tokenizer), loaded under a spinner on stderr."""
    from mlx_qwen3next import load

    path = pick_model(name)
    with err.status(f"loading {path.name} ...", spinner="dots"):
        model, tokenizer = load(path, dtype=dtype, mtp=mtp is not False)
    return path, model, tokenizer
