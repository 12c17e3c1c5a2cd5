"""Decode several requests as one batch: each row's cache stacked into one left-padded
HybridCache, one model call per step for all rows, each row sampled with its own
settings and turned into text by its own Reply.

A row joins with its prompt already prefilled alone (its cache holds the prompt and
all but its last token, the token loop's contract) and leaves with its own cache
again, unpadded, as if it had run alone. Rows join and leave between steps; the
batch cache is rebuilt only then. The model runs left-padded batches exactly
(model.make_cache's `left_pad`), so a row's tokens do not depend on the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import mlx.core as mx

from ..cache import HybridCache, KVCache
from .sampling import make_processors
from .stream import Reply, Request


@dataclass
class Row:
    """One request in the batch: `last` is the token to feed next."""

    key: object
    request: Request
    reply: Reply
    last: int
    history: Optional[mx.array] = None  # what the processors have seen: prompt, reply so far
    sampler: object = None
    processors: list = field(default_factory=list)

    @classmethod
    def resume(cls, key, request: Request, reply: Reply) -> "Row":
        """A request whose token loop stopped after `reply`'s tokens (its cache holds
        the prompt and all of them but the last)."""
        prompt = request.ids[request.start:]
        fed = prompt + reply.generated[:-1]
        return cls(key, request, reply, reply.generated[-1], mx.array(fed, mx.int32),
                   request.cfg.sampler(), make_processors(request.cfg, len(prompt)))

    def sample(self, logits: mx.array):
        """(token [1], logprobs [vocab]) from this row's logits [1, vocab]."""
        if self.processors:
            self.history = mx.concatenate([self.history, mx.array([self.last], mx.int32)])
            for proc in self.processors:
                logits = proc(self.history, logits)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        return self.sampler(logprobs), logprobs[0]


def stack(model, caches: list[HybridCache]) -> HybridCache:
    """One cache for the rows of `caches` (one row each), left-padded to the longest."""
    if len(caches) == 1:
        return caches[0]
    end = max(c.offset for c in caches)
    pads = [end - c.offset for c in caches]
    out = model.make_cache(pads if any(pads) else None)
    out.offset = end
    for i, layer in enumerate(out):
        rows = [c[i] for c in caches]
        if isinstance(layer, KVCache):
            layer.keys = mx.concatenate([_padded(r.keys, r.offset, p) for r, p in zip(rows, pads)])
            layer.values = mx.concatenate(
                [_padded(r.values, r.offset, p) for r, p in zip(rows, pads)])
            layer.offset = end
        else:
            layer.conv_state = mx.concatenate([r.conv_state for r in rows])
            layer.recurrent_state = mx.concatenate([r.recurrent_state for r in rows])
    return out


def _padded(a: mx.array, used: int, pad: int) -> mx.array:
    a = a[..., :used, :]
    if not pad:
        return a
    return mx.concatenate([mx.zeros((*a.shape[:2], pad, a.shape[-1]), a.dtype), a], axis=2)


def _empty(cache: HybridCache):
    """Drop a cache's arrays (whoever still holds the cache object)."""
    for layer in cache:
        if isinstance(layer, KVCache):
            layer.keys = layer.values = None
        else:
            layer.conv_state = layer.recurrent_state = None


def unstack(model, cache: HybridCache, n: int) -> list[HybridCache]:
    """The rows of a stacked cache, each unpadded: what it would hold had it run alone."""
    if n == 1:
        return [cache]
    pads = [0] * n if cache.left_pad is None else cache.left_pad.tolist()
    out = []
    for b, pad in enumerate(pads):
        row = model.make_cache()
        row.offset = cache.offset - pad
        for layer, whole in zip(row, cache):
            if isinstance(layer, KVCache):
                layer.keys = whole.keys[b:b + 1, :, pad:cache.offset, :]
                layer.values = whole.values[b:b + 1, :, pad:cache.offset, :]
                layer.offset = row.offset
            else:
                layer.conv_state = whole.conv_state[b:b + 1]
                layer.recurrent_state = whole.recurrent_state[b:b + 1]
        out.append(row)
    return out


class Batch:
    """Rows decoded together; `step()` feeds every row's last token once."""

    def __init__(self, model):
        self.model = model
        self.rows: list[Row] = []
        self.cache: Optional[HybridCache] = None

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, row: Row):
        self._split()
        self.rows.append(row)

    def remove(self, row: Row):
        """Take `row` out; its request's cache is its own again."""
        self._split()
        self.rows.remove(row)

    def _split(self):
        """Give each row its own cache back (before the rows change)."""
        if self.cache is None:
            return
        for row, cache in zip(self.rows, unstack(self.model, self.cache, len(self.rows))):
            row.request.cache = cache
        self.cache = None

    def step(self) -> list[tuple[Row, object]]:
        """One token for every row: [(row, its GenerationResponse)]."""
        if self.cache is None:
            caches = [r.request.cache for r in self.rows]
            self.cache = stack(self.model, caches)
            if len(caches) > 1:  # the batch holds the rows' state now: free theirs
                for cache in caches:
                    _empty(cache)
        tokens = mx.array([[r.last] for r in self.rows], mx.int32)
        logits = self.model(tokens, self.cache)[:, -1, :]
        drawn = [r.sample(logits[i:i + 1]) for i, r in enumerate(self.rows)]
        mx.eval([t for t, _ in drawn], [lp for _, lp in drawn], self.cache.arrays())
        out = []
        for row, (token, logprobs) in zip(self.rows, drawn):
            row.last = token.item()
            out.append((row, row.reply.feed(row.last, logprobs)))
        return out
