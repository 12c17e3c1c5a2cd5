"""Prefill: a prompt fed into the cache in chunks, for plain and speculative decoding."""

from __future__ import annotations

from typing import Callable, Optional

import mlx.core as mx

PREFILL_STEP = 2048


def prefill(model, cache, ids, step: int = PREFILL_STEP,
            on_chunk: Optional[Callable] = None,
            progress: Optional[Callable[[int, int], None]] = None,
            total: Optional[int] = None) -> Optional[mx.array]:
    """Feed `ids` into `cache` `step` tokens at a time, evaluating after each chunk so
    that memory stays bounded by one chunk's activations. No logits are computed.

    `on_chunk(chunk [1, n], hidden [1, n, hidden])` runs after each chunk's forward;
    the arrays it returns are evaluated with the cache. `progress(done, total)`
    follows each chunk. Returns the last position's hidden state [1, 1, hidden]
    (None for no ids).
    """
    ids = mx.array(ids, dtype=mx.int32).reshape(-1)
    total = ids.size if total is None else total
    last = None
    for start in range(0, ids.size, step):
        chunk = ids[None, start : start + step]
        hidden = model.hidden(chunk, cache)
        last = hidden[:, -1:]
        extra = on_chunk(chunk, hidden) if on_chunk is not None else None
        mx.eval(cache.arrays(), last, extra or [])
        mx.clear_cache()
        if progress is not None:
            progress(min(start + step, ids.size), total)
    return last
