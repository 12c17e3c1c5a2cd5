"""The token loop: prefill, then one token per forward, with the cache contract every
loop keeps; `make_token_loop` picks it or the MTP speculative loop (same contract)."""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import mlx.core as mx

from .prefill import PREFILL_STEP, prefill
from .sampling import SamplingConfig
from .speculative import speculative_stream


def token_stream(model, prompt_ids, cache, sampler, logits_processors=(),
                 max_tokens: Optional[int] = None, prefill_step_size: int = PREFILL_STEP,
                 progress: Optional[Callable[[int, int], None]] = None,
                 on_chunk: Optional[Callable] = None, cuts=(),
                 ) -> Iterator[tuple[int, mx.array]]:
    """Prefill `prompt_ids` into `cache`, then yield (token, logprobs [vocab]) forever or
    `max_tokens` times.

    Contract (every token loop, including the speculative one, keeps it): `cache`
    always ends up holding the prompt plus every yielded token except the last
    one, whether the loop ran out, the consumer closed the generator early
    (`gen.close()`, `break` + garbage collection), or an exception (Ctrl-C) hit
    the loop; if nothing was yielded the cache is as it was before the call. To
    continue, feed the last token first. Processors see this call's tokens only:
    (prompt + reply so far, logits) -> logits, as in mlx-lm. `on_chunk` and `cuts`
    go to the prefill (prefill.py).
    """
    prompt = mx.array(list(prompt_ids), dtype=mx.int32)
    if prompt.size == 0:
        raise ValueError("prompt is empty")
    keep = cache.mark()  # where to go back to if we stop here
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
        prefill(model, cache, prompt[:-1], prefill_step_size, on_chunk, progress, prompt.size,
                cuts)
        if logits_processors and prompt.size > 1:
            history = prompt[:-1]
        y, logprobs = step(prompt[-1:])
        mx.async_eval(y, logprobs)
        n = 0
        while True:
            more = max_tokens is None or n + 1 < max_tokens
            if more:  # feed y before handing it out, so the device keeps working
                before = cache.mark()
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
            cache.restore(keep)


def make_token_loop(model, cfg: SamplingConfig, mtp: Optional[bool] = None,
                    draft_tokens: int = 1):
    """`loop(prompt_ids, cache, processors, max_tokens, prefill_step, progress, on_chunk,
    cuts)` -> an iterator of (token, logprobs): plain `token_stream`, or the MTP
    speculative loop.

    mtp=None: speculative when the model has an MTP head; True: require the head
    (ValueError without it); False: plain.
    """
    if isinstance(draft_tokens, bool) or not isinstance(draft_tokens, int) or draft_tokens < 1:
        raise ValueError(f"draft_tokens must be a positive integer, got {draft_tokens!r}")
    sampler = cfg.sampler()

    def plain(ids, cache, procs, max_tokens, step, progress, on_chunk=None, cuts=()):
        return token_stream(model, ids, cache, sampler, procs, max_tokens, step, progress,
                            on_chunk, cuts)

    has_head = bool(getattr(model, "has_mtp", False))
    if mtp and not has_head:
        raise ValueError("this checkpoint has no MTP head (load with mtp=True, or pass mtp=False)")
    if mtp is False or not has_head:
        return plain

    def speculative(ids, cache, procs, max_tokens, step, progress, on_chunk=None, cuts=()):
        return speculative_stream(model, ids, cache, draft_tokens=draft_tokens, sampling=cfg,
                                  logits_processors=procs, max_tokens=max_tokens,
                                  prefill_step=step, progress=progress, on_chunk=on_chunk,
                                  cuts=cuts)

    return speculative
