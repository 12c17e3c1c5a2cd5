"""A prompt cache across requests: hybrid-cache checkpoints keyed by token prefixes.

Each entry is one request's cache as it ended: the token ids it holds, each attention
layer's keys and values (views of the request's own buffers, not copies), and the
DeltaNet states at a few positions (checkpoints). A new prompt restores the entry
and checkpoint that cover its longest stored prefix and prefills only the rest:

- the KV caches are trimmed to the checkpoint (views of the entry's arrays; the first
  write after a restore copies them once, since the entry still holds them);
- the DeltaNet state is the checkpoint's own (the recurrent state cannot be trimmed,
  and is never recomputed).

Checkpoints are taken at the end of each chat message, every `every` tokens of a long
prefill, and at the end of the prompt (none closer than MIN_GAP tokens to another), so
that a prompt that diverges mid-document reuses the part before the divergence. An entry
that is a prefix of a newer one is dropped when the newer one is stored (its checkpoints
move over), so each DeltaNet state is held once. Entries are evicted least-recently-used past `max_bytes`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Optional

from ..cache import DeltaNetCache, HybridCache
from ..checkpoints.memory import available_memory
from .prompt import render_chat

EVERY = 2048  # tokens between checkpoints of a long prefill
MIN_GAP = 32  # fewest tokens between checkpoints (re-prefilling fewer costs about a chunk)
SHARE_OF_MEMORY = 0.1  # the default byte budget, of the memory available at creation


@dataclass
class Entry:
    tokens: tuple
    kv_bits: Optional[int]
    layers: list  # per layer: a KV layer's state() (arrays up to its offset), or None
    mtp: Optional[tuple]  # the MTP head's KV state, if it had one
    points: dict = field(default_factory=dict)  # position -> per DeltaNet layer (conv, state)
    used: int = 0

    @property
    def nbytes(self) -> int:
        kv = sum(a.nbytes for s in self.layers if s for a in s)
        kv += sum(a.nbytes for a in self.mtp or ())
        states = sum(a.nbytes for p in self.points.values() for s in p for a in s
                     if a is not None)
        return kv + states

    def best_point(self, ids) -> int:
        """The furthest checkpoint inside the common prefix of `ids`, short of its end."""
        common = 0
        limit = min(len(self.tokens), len(ids) - 1)
        while common < limit and self.tokens[common] == ids[common]:
            common += 1
        points = sorted(self.points)
        i = bisect.bisect_right(points, common) - 1
        return points[i] if i >= 0 else 0


class PromptCache:
    """`fetch` a warm cache for a prompt, `record` checkpoints while it prefills, then
    `store` the cache when the request ends. Bounded by `max_bytes` (default: a tenth of
    the memory available when it is made)."""

    def __init__(self, max_bytes: Optional[int] = None, every: int = EVERY):
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 0):
            raise ValueError(f"max_bytes must be a non-negative integer, got {max_bytes!r}")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.max_bytes = int(available_memory() * SHARE_OF_MEMORY) if max_bytes is None \
            else max_bytes
        self.every = every
        self.entries: list[Entry] = []
        self._clock = 0

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries)

    # -- a request -------------------------------------------------------------------
    def fetch(self, model, ids, kv_bits: Optional[int] = None) -> tuple[HybridCache, int]:
        """A cache holding the longest stored prefix of `ids` (a fresh one if none), and
        how many of the ids it holds. At least the last id is always left to feed."""
        from .kv_quant import quantize_kv

        cache = model.make_cache()
        if kv_bits is not None:
            quantize_kv(cache, kv_bits)
        best, where = None, 0
        for e in self.entries:
            p = e.best_point(ids) if e.kv_bits == kv_bits else 0
            if p > where:
                best, where = e, p
        if best is None:
            return cache, 0
        self._clock += 1
        best.used = self._clock
        restore(cache, best, where)
        return cache, where

    def cuts(self, start: int, n: int, boundaries=()) -> list[int]:
        """Positions (counted from `start`, the cached ones) where the prefill of ids
        start..n should end a chunk for a checkpoint: message boundaries and every `every`
        tokens, each at least MIN_GAP from the last one kept and from n, and n itself.
        A closer checkpoint would save less prefill than its chunk costs: a follow-up
        turn's suffix (the reply's end, a short question, the generation prompt) is then
        one chunk, not three."""
        wanted = {b for b in boundaries if start < b < n}
        wanted |= set(range((start // self.every + 1) * self.every, n, self.every))
        kept = []
        for p in sorted(wanted):
            if p - (kept[-1] if kept else start) >= MIN_GAP and n - p >= MIN_GAP:
                kept.append(p)
        return [p - start for p in kept + [n] if p > start]

    def recorder(self, cache: HybridCache, positions) -> "Recorder":
        return Recorder(cache, set(positions))

    def store(self, tokens, cache: HybridCache, recorded: Optional[dict] = None,
              kv_bits: Optional[int] = None):
        """Keep `cache` (holding `tokens`) with the checkpoints `recorded` during its
        prefill and one at its end; drops entries it extends, then evicts past the budget."""
        tokens = tuple(tokens)
        if len(tokens) != cache.offset or not tokens:
            return
        points = dict(recorded or {})
        points[len(tokens)] = deltanet_states(cache)
        for e in list(self.entries):
            if e.kv_bits == kv_bits and len(e.tokens) <= len(tokens) \
                    and tokens[: len(e.tokens)] == e.tokens:
                for p, states in e.points.items():  # the older request's checkpoints
                    points.setdefault(p, states)
                self.entries.remove(e)
        self._clock += 1
        mtp = getattr(cache, "mtp_cache", None)  # kept only in step with the tokens
        mtp_state = mtp[0].state() if mtp is not None and mtp[0].offset \
            and mtp[0].offset == len(tokens) - 1 else None
        layers = [None if isinstance(c, DeltaNetCache) else c.state() for c in cache]
        self.entries.append(Entry(tokens, kv_bits, layers, mtp_state, points, self._clock))
        self._evict()

    def _evict(self):
        while self.entries and self.nbytes > self.max_bytes:
            self.entries.remove(min(self.entries, key=lambda e: e.used))


class Recorder:
    """The prefill hook that takes a checkpoint at each wanted position."""

    def __init__(self, cache: HybridCache, positions: set):
        self.cache, self.positions, self.points = cache, positions, {}

    def __call__(self, chunk, hidden):
        if self.cache.offset in self.positions:
            self.points[self.cache.offset] = deltanet_states(self.cache)


def deltanet_states(cache: HybridCache) -> tuple:
    """Each DeltaNet layer's (conv, recurrent) state: references, not copies."""
    return tuple(c.state() for c in cache if isinstance(c, DeltaNetCache))


def restore(cache: HybridCache, entry: Entry, p: int):
    """Put `cache` (fresh) at position p of `entry`."""
    states = iter(entry.points[p])
    for c, kv in zip(cache, entry.layers):
        if isinstance(c, DeltaNetCache):
            c.set_state(next(states))
        else:
            c.set_state(tuple(a[..., :p, :] for a in kv))  # new arrays: the entry's stay
    cache.offset = p
    keep = min(p - 1, entry.mtp[0].shape[2]) if entry.mtp is not None else 0
    if keep > 0:  # the MTP head's own KV cache (model/mtp.py's make_cache), as far as p
        cache.mtp_cache = HybridCache(["full_attention"])
        cache.mtp_cache[0].set_state(tuple(a[..., :keep, :] for a in entry.mtp))
        cache.mtp_cache.offset = keep


def message_ends(tokenizer, messages, tools, ids) -> list[int]:
    """Where each chat message ends in `ids`: the positions whose prefix of `ids` is the
    rendering of the messages so far (a reply kept as generated may not be).

    One encoding of the whole chat, with each token's end in the text: a message ends
    at a position when its rendering is a prefix of the whole's and a token ends there
    (not one encoding per message: that grew with the messages times the tokens)."""
    whole = render_chat(tokenizer, messages, tools)
    try:
        hf = getattr(tokenizer, "_tokenizer", tokenizer)  # under mlx-lm's wrapper
        encoded = hf(whole, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # a slow tokenizer gives no offsets: no message checkpoints
        return []
    enc, at = encoded["input_ids"], {end: i + 1 for i, (_, end) in enumerate(
        encoded["offset_mapping"])}
    same = next((i for i, (a, b) in enumerate(zip(enc, ids)) if a != b), min(len(enc), len(ids)))
    out = []
    for i in range(1, len(messages) + 1):
        head = render_chat(tokenizer, messages[:i], tools, add_generation_prompt=False)
        end = at.get(len(head)) if whole.startswith(head) else None
        if end is not None and end <= same:
            out.append(end)
    return out
