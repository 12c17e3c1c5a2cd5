"""Generation: chunked prefill, the token loop, and streaming text with stops and timings.

`token_stream` is the one token loop; `make_token_loop` picks it or the MTP
speculative loop (speculative.py, same contract) when the model has an MTP head.
`stream_generate` / `generate` wrap it with prompt encoding, sampling, stop
ids and strings, streaming detokenisation and the macOS wired-memory limit.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import mlx.core as mx

from .kv_quant import quantize_kv
from .long_context import context_limit
from .memory import wired_limit
from .prompt import check_max_tokens, check_stop, encode_prompt
from .rollback import cache_arrays, mark, rewind
from .sampling_dist import SamplingParams
from .speculative import speculative_stream
from .sampling import (
    SamplingConfig, default_sampling, make_processors, make_sampling_fn, resolve_sampling,
)

PREFILL_STEP = 2048


@dataclass
class GenerationResponse:
    """One generated token and the text it completes (mlx-lm's fields, plus prompt_time)."""

    text: str  # new text; may be "" (a multi-byte character not complete yet)
    token: int
    logprobs: mx.array  # [vocab] log-probabilities the token was drawn from (before sampling)
    from_draft: bool  # accepted from an MTP draft
    prompt_tokens: int
    prompt_tps: float
    generation_tokens: int
    generation_tps: float
    peak_memory: float  # GB
    finish_reason: Optional[str] = None  # "stop" (eos id or stop string), "length", or None
    prompt_time: float = 0.0  # seconds to the first token


def prefill(model, cache, ids, step: int = PREFILL_STEP,
            progress: Optional[Callable[[int, int], None]] = None, total: Optional[int] = None):
    """Feed `ids` into `cache` `step` tokens at a time, evaluating after each chunk so
    memory stays bounded by one chunk's activations. No logits are computed."""
    ids = mx.array(ids, dtype=mx.int32).reshape(-1)
    total = ids.size if total is None else total
    for start in range(0, ids.size, step):
        model.hidden(ids[None, start : start + step], cache)
        mx.eval(cache_arrays(cache))
        mx.clear_cache()
        if progress is not None:
            progress(min(start + step, ids.size), total)


def token_stream(model, prompt_ids, cache, sampler, logits_processors=(),
                 max_tokens: Optional[int] = None, prefill_step_size: int = PREFILL_STEP,
                 progress: Optional[Callable[[int, int], None]] = None,
                 ) -> Iterator[tuple[int, mx.array]]:
    """Prefill `prompt_ids` into `cache`, then yield (token, logprobs [vocab]) forever or
    `max_tokens` times.

    Contract (every token loop, including the speculative one, keeps it): `cache`
    always ends up holding the prompt plus every yielded token except the last
    one, whether the loop ran out, the consumer closed the generator early
    (`gen.close()`, `break` + garbage collection), or an exception (Ctrl-C) hit
    the loop; if nothing was yielded the cache is as it was before the call. To
    continue, feed the last token first. Processors see this call's tokens only:
    (prompt + reply so far, logits) -> logits, as in mlx-lm.
    """
    prompt = mx.array(list(prompt_ids), dtype=mx.int32)
    if prompt.size == 0:
        raise ValueError("prompt is empty")
    keep = mark(cache)  # where to go back to if we stop here
    history = None

    def step(tokens: mx.array):
        nonlocal history
        logits = model(tokens[None], cache)[:, -1, :]
        if logits_processors:
            history = tokens if history is None else mx.concatenate([history, tokens])
            for proc in logits_processors:
                logits = proc(history, logits)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        return sampler(logprobs), logprobs[0]

    try:
        prefill(model, cache, prompt[:-1], prefill_step_size, progress, prompt.size)
        if logits_processors and prompt.size > 1:
            history = prompt[:-1]
        y, logprobs = step(prompt[-1:])
        mx.async_eval(y, logprobs)
        n = 0
        while True:
            more = max_tokens is None or n + 1 < max_tokens
            if more:  # feed y before handing it out, so the device keeps working
                before = mark(cache)
                next_y, next_logprobs = step(y)
                mx.async_eval(next_y, next_logprobs)
            token = y.item()
            keep = before if more else None
            yield token, logprobs
            if not more:
                return
            y, logprobs = next_y, next_logprobs
            n += 1
            if n % 256 == 0:
                mx.clear_cache()
    finally:
        if keep is not None:
            rewind(cache, keep)


def make_token_loop(model, cfg: SamplingConfig, mtp: Optional[bool] = None,
                    draft_tokens: int = 1):
    """`loop(prompt_ids, cache, processors, max_tokens, prefill_step, progress)` -> an
    iterator of (token, logprobs): plain `token_stream`, or the MTP speculative loop.

    mtp=None: speculative when the model has an MTP head; True: require the head
    (ValueError without it); False: plain.
    """
    if isinstance(draft_tokens, bool) or not isinstance(draft_tokens, int) or draft_tokens < 1:
        raise ValueError(f"draft_tokens must be a positive integer, got {draft_tokens!r}")
    sampler = make_sampling_fn(cfg, model.config.vocab_size)

    def plain(ids, cache, procs, max_tokens, step, progress):
        return token_stream(model, ids, cache, sampler, procs, max_tokens, step, progress)

    has_head = bool(getattr(model, "has_mtp", False))
    if mtp and not has_head:
        raise ValueError("this checkpoint has no MTP head (load with mtp=True, or pass mtp=False)")
    if mtp is False or not has_head:
        return plain
    params = SamplingParams.from_config(cfg, model.config.vocab_size)

    def speculative(ids, cache, procs, max_tokens, step, progress):
        return speculative_stream(model, ids, cache, draft_tokens=draft_tokens, sampling=params,
                                  logits_processors=procs, max_tokens=max_tokens,
                                  prefill_step=step, progress=progress)

    return speculative


def stream_generate(model, tokenizer, prompt, *, max_tokens: Optional[int] = 512,
                    sampling: Optional[SamplingConfig] = None,
                    temperature: Optional[float] = None, top_p: Optional[float] = None,
                    top_k: Optional[int] = None, min_p: Optional[float] = None,
                    presence_penalty: Optional[float] = None,
                    repetition_penalty: Optional[float] = None, seed: Optional[int] = None,
                    stop: str | Sequence[str] | None = None, cache=None,
                    prefill_step_size: int = PREFILL_STEP, kv_bits: Optional[int] = None,
                    max_context: Optional[int] = None, tools: Optional[list] = None,
                    progress: Optional[Callable[[int, int], None]] = None,
                    mtp: Optional[bool] = None, draft_tokens: int = 1,
                    ) -> Iterator[GenerationResponse]:
    """Stream a reply: one GenerationResponse per generated token, the last with
    finish_reason set. Arguments are checked now (ValueError, one line), before
    any work.

    prompt: raw text, bytes (UTF-8), token ids, or chat messages
    ([{"role": ..., "content": ...}], rendered with the chat template and `tools`).
    Sampling defaults come from the model card and generation_config.json
    (`sampling`), each keyword overriding one field; temperature 0 is greedy.
    Stops at any eos id (not included in the text), any `stop` string (cut off),
    `max_tokens` (None: until the context is full). Pass `cache` to continue a
    conversation (see `token_stream` for what it holds afterwards).
    """
    cfg = resolve_sampling(sampling or default_sampling(tokenizer, model),
                           temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                           presence_penalty=presence_penalty,
                           repetition_penalty=repetition_penalty, seed=seed)
    stops, max_tokens = check_stop(stop), check_max_tokens(max_tokens)
    if isinstance(prefill_step_size, bool) or not isinstance(prefill_step_size, int) \
            or prefill_step_size < 1:
        raise ValueError(f"prefill_step_size must be a positive integer, got {prefill_step_size!r}")
    ids = encode_prompt(tokenizer, prompt, model.config.vocab_size, tools)
    cache = model.make_cache() if cache is None else cache
    limit = max_context or context_limit(model.config)
    room = limit - cache.offset - len(ids)
    if room < 0:
        raise ValueError(f"prompt is {len(ids)} tokens but only {max(limit - cache.offset, 0)} "
                         f"fit in the context ({limit} tokens)")
    budget = room + 1 if max_tokens is None else min(max_tokens, room + 1)
    loop = make_token_loop(model, cfg, mtp, draft_tokens)
    if kv_bits is not None:
        quantize_kv(cache, kv_bits)
    tokens = functools.partial(loop, ids, cache, make_processors(cfg, len(ids)), budget,
                               prefill_step_size, progress)
    return _stream(model, tokenizer, tokens, len(ids), stops, budget, cfg.seed)


def _stream(model, tokenizer, make_tokens, n_prompt, stops, budget, seed):
    detok = tokenizer.detokenizer
    eos = set(tokenizer.eos_token_ids)
    holdback = max((len(s) for s in stops), default=1) - 1
    unreleased = ""
    with wired_limit(model):
        if seed is not None:
            mx.random.seed(seed)
        tic = time.perf_counter()
        prompt_time = 0.0
        gen = make_tokens()
        try:
            for n, (token, logprobs, *rest) in enumerate(gen):
                if n == 0:
                    prompt_time = time.perf_counter() - tic
                    tic = time.perf_counter()
                finish = None
                if token in eos:
                    finish = "stop"
                else:
                    detok.add_token(token)
                    if n + 1 == budget:
                        finish = "length"
                if finish:
                    detok.finalize()
                unreleased += detok.last_segment
                cut = min((i for i in (unreleased.find(s) for s in stops) if i >= 0), default=-1)
                if cut >= 0:
                    unreleased, finish = unreleased[:cut], "stop"
                split = len(unreleased) if finish else max(len(unreleased) - holdback, 0)
                text, unreleased = unreleased[:split], unreleased[split:]
                elapsed = max(time.perf_counter() - tic, 1e-9)
                yield GenerationResponse(
                    text=text, token=token, logprobs=logprobs,
                    from_draft=bool(rest[0]) if rest else False,
                    prompt_tokens=n_prompt, prompt_tps=n_prompt / max(prompt_time, 1e-9),
                    generation_tokens=n + 1, generation_tps=(n + 1) / elapsed,
                    peak_memory=mx.get_peak_memory() / 1e9, finish_reason=finish,
                    prompt_time=prompt_time,
                )
                if finish:
                    return
        finally:
            gen.close()


def generate(model, tokenizer, prompt, **kwargs) -> str:
    """The whole reply as one string; takes stream_generate's keywords."""
    return "".join(r.text for r in stream_generate(model, tokenizer, prompt, **kwargs))
