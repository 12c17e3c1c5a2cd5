"""`qwen3next generate [MODEL] -p TEXT`: one reply, plain text or JSON, pipe-friendly."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from . import options as o
from . import ranks
from .console import note
from .render import printable
from .stats import stats_line


@o.generation_options
def generate(
    model: Optional[str] = o.MODEL,
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="The prompt (default: stdin)."),
    raw: bool = typer.Option(False, "--raw", help="Send the prompt as is, without the chat template (default: chat)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: text, token counts, timings (default: plain text)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print a stats line on stderr."),
    prompt_cache: Optional[Path] = typer.Option(
        None, "--prompt-cache", help="Start from a cache saved by `cache-prompt` (default: none)."),
    *,
    opts: o.GenerationOptions,
):
    """Generate one reply: to stdout as it streams, or as JSON with --json.

    Reads the prompt from stdin when -p is not given, so it composes in pipes:
    `echo hi | qwen3next generate MODEL --json | jq .text`.
    """
    from mlx_qwen3next.generation import stream_generate

    if raw and opts.tool_list:
        raise ValueError("--tools goes through the chat template: drop --raw")
    link = ranks.join(opts.distributed)
    if prompt_cache is not None:
        ranks.alone_only("--prompt-cache", link)
    text = ranks.from_rank0(link, lambda: _prompt(prompt, link))
    path, mdl, tokenizer = o.open_model(model, opts.dtype, opts.mtp, opts.split)
    system = [{"role": "system", "content": opts.system}] if opts.system else []
    request = text if raw else system + [{"role": "user", "content": text}]
    cache = None
    if prompt_cache is not None:
        request, cache = _from_cache(prompt_cache, mdl, tokenizer, text, raw)
    pieces, last, drafted = [], None, 0
    stream = stream_generate(
        mdl, tokenizer, request, max_tokens=opts.max_tokens or 512, mtp=opts.mtp,
        draft_tokens=opts.draft_tokens, prompt_cache=cache, tools=opts.tool_list,
        **opts.sampling())
    shown = printable if sys.stdout.isatty() else str  # exact text into pipes and files
    try:
        for last in stream:
            pieces.append(last.text)
            drafted += last.from_draft
            if not as_json and last.text:
                sys.stdout.write(shown(last.text))
                sys.stdout.flush()
    except KeyboardInterrupt:  # what came so far is still printed, then exit 130
        _finish(as_json, path, pieces, last, drafted, "interrupted")
        raise
    _finish(as_json, path, pieces, last, drafted, reports=_reports(mdl, link))
    if verbose and last is not None:
        note(stats_line(last.prompt_tokens, last.prompt_time, last.generation_tokens,
                        last.generation_tps, from_drafts=drafted, draft_tokens=opts.draft_tokens))


def _from_cache(file, model, tokenizer, text, raw):
    """(the request, a PromptCache holding the file's cache): with --raw, the cached
    tokens then TEXT's; else the cached chat with TEXT as its next user message."""
    from mlx_qwen3next.generation.cache_file import load_prompt_cache
    from mlx_qwen3next.generation.prompt import encode_text
    from mlx_qwen3next.generation.prompt_cache import PromptCache

    cache, tokens, extra = load_prompt_cache(file, model)
    if raw != ("messages" not in extra):
        kind = "raw text" if "messages" not in extra else "a chat"
        raise ValueError(f"{file}: the cached prompt is {kind}; "
                         f"{'drop' if raw else 'add'} --raw")
    store = PromptCache(max_bytes=cache.nbytes * 4 + (1 << 20))
    store.store(tokens, cache)
    if raw:
        return tokens + encode_text(tokenizer, text), store
    return extra["messages"] + [{"role": "user", "content": text}], store


def _finish(as_json, path, pieces, last, drafted, reason=None, reports=None):
    if as_json:
        record = _record(path, "".join(pieces), last, drafted)
        if reports:
            record["ranks"] = reports
        if reason:
            record["finish_reason"] = reason
        print(json.dumps(record, ensure_ascii=False), flush=True)
    else:
        sys.stdout.write("\n")
        sys.stdout.flush()


def _prompt(prompt: Optional[str], link=None) -> str:
    if prompt is not None and not prompt.strip():
        raise ValueError("the prompt given with -p is empty")
    if prompt is None and link is not None:  # its stdin would never end
        raise ValueError("under mlx.launch give the prompt with -p (mlx.launch does not "
                         "pass on the end of its input)")
    return prompt if prompt is not None else _stdin()


def _reports(model, link):
    """Each rank's layers and memory, when the model is split (a collective call)."""
    if link is None:
        return None
    from mlx_qwen3next.distributed import gather_reports

    return gather_reports(model)


def _stdin() -> str:
    if sys.stdin is None or sys.stdin.isatty():
        raise ValueError("no prompt: give -p TEXT or pipe text in")
    text = sys.stdin.read()
    if not text.strip():
        raise ValueError("the prompt read from stdin is empty")
    return text.rstrip("\n")


def _record(path, text: str, last, from_drafts: int) -> dict:
    rec = {"model": str(path), "text": text, "generation_tokens": 0}
    if last is not None:
        rec.update(
            prompt_tokens=last.prompt_tokens,
            generation_tokens=last.generation_tokens,
            finish_reason=last.finish_reason,
            time_to_first_token=round(last.prompt_time, 4),
            prompt_tps=round(last.prompt_tps, 2),
            generation_tps=round(last.generation_tps, 2),
            peak_memory_gb=round(last.peak_memory, 3),
            from_mtp_drafts=from_drafts,
            cached_tokens=last.cached_tokens,
        )
    return rec
