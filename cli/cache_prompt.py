"""`qwen3next cache-prompt [MODEL] -p TEXT -o FILE`: prefill a prompt once and save the
cache, so that `generate --prompt-cache FILE` starts from it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from . import options as o
from . import ranks
from .console import note, size


def cache_prompt(
    model: Optional[str] = o.MODEL,
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="The prompt (default: stdin)."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Read the prompt from this file."),
    output: Path = typer.Option(..., "--output", "-o", help="The .safetensors file to write."),
    system: Optional[str] = typer.Option(None, "--system", "-s", help="System prompt (default: none)."),
    raw: bool = typer.Option(False, "--raw", help="Cache the text as is, without the chat template (default: chat)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Cast float weights: bfloat16, float16 or float32 (default: as stored)."),
    distributed: Optional[str] = o.DISTRIBUTED,
):
    """Prefill a prompt (a first user message, or raw text with --raw) and save its cache.

    Then `qwen3next generate MODEL --prompt-cache FILE -p QUESTION` prefills only the
    question: in chat mode it is the next user message, with --raw it is more text.
    """
    from mlx_qwen3next.checkpoints.loading import check_dtype
    from mlx_qwen3next.generation import prefill
    from mlx_qwen3next.generation.cache_file import save_prompt_cache
    from mlx_qwen3next.generation.prompt import encode_prompt

    check_dtype(dtype)
    o.check_distributed(distributed, None)
    ranks.alone_only("cache-prompt", ranks.join(distributed))  # the file needs every layer
    text = read_prompt(prompt, file)
    path, mdl, tokenizer = o.open_model(model, dtype, None)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}]
    if raw:
        ids = encode_prompt(tokenizer, text, mdl.config.vocab_size)
    else:
        from mlx_qwen3next.generation.prompt import encode_text, render_chat

        ids = encode_text(tokenizer, render_chat(tokenizer, messages,
                                                 add_generation_prompt=False))
    t0 = time.perf_counter()
    cache = mdl.make_cache()
    prefill(mdl, cache, ids)
    seconds = time.perf_counter() - t0
    extra = {} if raw else {"messages": messages}
    save_prompt_cache(output, cache, ids, mdl, **extra)
    note(f"cached {len(ids):,} prompt tokens of {path.name} in {output} "
         f"({size(output.stat().st_size)}; prefill took {seconds:.2f} s)")


def read_prompt(prompt: Optional[str], file: Optional[Path]) -> str:
    """The prompt from -p, -f or stdin; an empty one is an error."""
    from .generate import _stdin

    if prompt is not None and file is not None:
        raise ValueError("give -p TEXT or -f FILE, not both")
    if file is not None:
        try:
            prompt = Path(file).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{file}: cannot read the prompt ({e})") from None
    if prompt is not None and not prompt.strip():
        raise ValueError("the prompt is empty")
    return prompt if prompt is not None else _stdin()
