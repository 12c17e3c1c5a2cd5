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

    job: object  # whose row this is (the server's Job)
    request: Request
    reply: Reply
    last: int
    history: Optional[mx.array] = None  # what the processors have seen: prompt, reply so far
    sampler: object = None
    processors: list = field(default_factory=list)

    @classmethod
    def resume(cls, job, request: Request, reply: Reply) -> "Row":
        """A request whose token loop stopped after `reply`'s tokens (its cache holds
        the prompt and all of them but the last). The MTP head's cache, if it ran
        speculatively, is dropped: batches decode without drafts."""
        if hasattr(request.cache, "mtp_cache"):
            del request.cache.mtp_cache
        prompt = request.ids[request.start:]
        processors = make_processors(request.cfg, len(prompt))
        fed = mx.array(prompt + reply.generated[:-1], mx.int32) if processors else None
        return cls(job, request, reply, reply.generated[-1], fed, request.cfg.sampler(),
                   processors)

    def sample(self, logits: mx.array):
        """(token [1], logprobs [vocab]) from this row's logits [1, vocab]."""
        if self.processors:
            self.history = mx.concatenate([self.history, mx.array([self.last], mx.int32)])
            for proc in self.processors:
                logits = proc(self.history, logits)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        return self.sampler(logprobs), logprobs[0]


def stack(model, caches: list[HybridCache]) -> HybridCache:
    """One cache for the rows of `caches` (one row each), left-padded to the longest. Its
    KV buffers hold a whole number of KVCache.step slots, as a growing cache's do (the
    compiled steps trace once per buffer size)."""
    if len(caches) == 1:
        return caches[0]
    end = max(c.offset for c in caches)
    slots = -(-(end + 1) // KVCache.step) * KVCache.step
    pads = [end - c.offset for c in caches]
    out = model.make_cache(pads if any(pads) else None)
    out.offset = end
    for i, layer in enumerate(out):
        rows = [c[i] for c in caches]
        if isinstance(layer, KVCache):
            layer.keys, layer.values = (
                mx.concatenate([_placed(getattr(r, name), r.offset, p, slots)
                                for r, p in zip(rows, pads)]) for name in ("keys", "values"))
            layer.offset = end
        else:
            layer.conv_state = mx.concatenate([r.conv_state for r in rows])
            layer.recurrent_state = mx.concatenate([r.recurrent_state for r in rows])
    return out


def _placed(a: mx.array, used: int, pad: int, slots: int) -> mx.array:
    """a's first `used` positions after `pad` empty ones, in a buffer of `slots`."""
    def empty(n):
        return mx.zeros((*a.shape[:2], n, a.shape[-1]), a.dtype)

    return mx.concatenate([empty(pad), a[..., :used, :], empty(slots - pad - used)], axis=2)


def _own(cache: HybridCache):
    """Give a cache arrays of its own where it holds views of a larger one."""
    for layer in cache:
        if isinstance(layer, KVCache):
            if layer.keys is not None:
                layer.keys, layer.values = mx.contiguous(layer.keys), mx.contiguous(layer.values)
        elif layer.conv_state is not None:
            layer.conv_state = mx.contiguous(layer.conv_state)
            layer.recurrent_state = mx.contiguous(layer.recurrent_state)
    mx.eval(cache.arrays())


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
        """Take `row` out; its request's cache is its own again (copied out, so that
        keeping it, in the prompt cache say, does not keep the batch's buffers)."""
        self._split()
        _own(row.request.cache)
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
