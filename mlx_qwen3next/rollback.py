"""Cheap positions to go back to in a HybridCache, for the token loop and chat sessions.

A `Mark` keeps each attention layer's *offset* (KV caches only ever append, so
trimming back to it restores them exactly) and references to each DeltaNet
layer's conv and recurrent state (new arrays every step, so nothing is copied).
Unlike `HybridCache.snapshot()` it holds no slice of the KV buffers: a slice keeps
the old buffer alive once the cache grows into a new one (or is updated by copy),
so each held snapshot can cost up to a second copy of the KV cache. The price:
a mark is only valid while the cache moves forward from it or back to it (never
back to an older mark, forward on another path, then to this one). Rewinding to
a mark invalidates newer marks.

Cost: the DeltaNet state, about 74 MB per mark on the real model (36 layers of
32 x 128 x 128 float32 plus the conv window); nothing for the KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from .cache import KVCache


@dataclass(frozen=True)
class Mark:
    offset: int
    layers: tuple  # int (KV offset) or (conv_state, recurrent_state) per layer

    @property
    def nbytes(self) -> int:
        return sum(_state_bytes(s) for s in self.layers if isinstance(s, tuple))


def _state_bytes(state) -> int:
    return sum(a.nbytes for a in state if a is not None)


def mark(cache) -> Mark:
    layers = tuple(c.offset if isinstance(c, KVCache) else c.state() for c in cache)
    return Mark(cache.offset, layers)


def rewind(cache, m: Mark) -> None:
    """Put `cache` back where it was when `m` was taken (see the module note)."""
    for c, state in zip(cache, m.layers):
        if isinstance(c, KVCache):
            c.trim(c.offset - state)
        else:
            c.set_state(state)
    cache.offset = m.offset


def marks_nbytes(marks) -> int:
    """Bytes held by a set of marks, counting shared states once."""
    seen, total = set(), 0
    for m in marks:
        for state in m.layers:
            if isinstance(state, tuple):
                for a in state:
                    if a is not None and id(a) not in seen:
                        seen.add(id(a))
                        total += a.nbytes
    return total


def cache_arrays(cache) -> list[mx.array]:
    """Every array a cache holds (to evaluate it after a prefill chunk)."""
    out = []
    for c in cache:
        for a in c.state() or ():
            if isinstance(a, mx.array):
                out.append(a)
    return out
