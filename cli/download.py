"""`qwen3next download [REPO]`: fetch what the model needs from the Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mlx_qwen3next.checkpoints import hub

from .console import err, note, out, size


def download(
    repo: str = typer.Argument(hub.DEFAULT_REPO, help="Hub repo id (org/name)."),
    local_dir: Optional[Path] = typer.Option(
        None, "--local-dir", help="Put the files here instead of the Hub cache."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Download a model (weights, config, tokenizer, chat template) from the Hugging Face Hub.

    Run it again after an interruption: finished files are not fetched again.
    Honours HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE and HF_ENDPOINT.
    """
    path = fetch_with_progress(repo, local_dir=local_dir, revision=revision, quiet=quiet)
    note(f"{repo}: {size(hub.dir_size(path))} in {path}")
    out.print(str(path), markup=False)


def fetch_with_progress(repo: str, quiet: bool = False, **kwargs) -> Path:
    """hub.fetch with a progress bar; huggingface_hub's own retry warnings are
    silenced (a failure ends as one line; running again resumes)."""
    from huggingface_hub.utils import logging as hf_logging

    from mlx_qwen3next.checkpoints.progress import bytes_progress, tqdm_for

    hf_logging.set_verbosity_error()

    if quiet or not err.is_terminal:  # a bar that never drew would still end a line
        return hub.fetch(repo, tqdm_class=tqdm_for(None), **kwargs)
    with bytes_progress(err) as progress:
        return hub.fetch(repo, tqdm_class=tqdm_for(progress), **kwargs)
