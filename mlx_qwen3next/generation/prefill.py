"""Prefill: a prompt fed into the cache in chunks, for plain and speculative decoding."""

from __future__ import annotations

from typing import Callable, Optional

import mlx.core as mx

PREFILL_STEP = 2048


def prefill(model, cache, ids, step: int = PREFILL_STEP,
            on_chunk: Optional[Callable] = None,
            progress: Optional[Callable[[int, int], None]] = None,
            total: Optional[int] = None, cuts=()) -> Optional[mx.array]:
    """Feed `ids` into `cache` `step` tokens at a time, evaluating after each chunk so
    that memory stays bounded by one chunk's activations. No logits are computed.

    A chunk also ends at each position in `cuts` (where a prompt cache checkpoints).
    `on_chunk(chunk [1, n], hidden [1, n, hidden])` runs after each chunk's forward;
    the arrays it returns are evaluated with the cache. `progress(done, total)`
    follows each chunk. Returns the last position's hidden state [1, 1, hidden]
    (None for no ids).
    """
    ids = mx.array(ids, dtype=mx.int32).reshape(-1)
    total = ids.size if total is None else total
    last = None
    for start, end in chunks(ids.size, step, cuts):
        chunk = ids[None, start:end]
        hidden = model.hidden(chunk, cache)
        last = hidden[:, -1:]
        extra = on_chunk(chunk, hidden) if on_chunk is not None else None
        mx.eval(cache.arrays(), last, extra or [])
        mx.clear_cache()
        if progress is not None:
            progress(end, total)
    return last


def chunks(n: int, step: int, cuts=()) -> list[tuple[int, int]]:
    """(start, end) of each chunk of n tokens: every `step` tokens and at each cut."""
    ends = sorted({min(e, n) for e in range(step, n + step, step)} | {c for c in cuts
                                                                        if 0 < c < n})
    return list(zip([0] + ends[:-1], ends))
