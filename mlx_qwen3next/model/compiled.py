"""Decode and verify steps: each layer's own __call__ under mx.compile (gpt-fast style).

The eager forward handles every case; these compiled steps cover the hot ones, a
[B, T] call on a cache with no left padding where T is 1 (decode) or at most
MAX_T with per-token states kept (a speculative verify), and the MTP head's
draft steps. Each layer is compiled with its cache arrays passed in and returned
and its weights as captured inputs (`inputs=layer`: read afresh each call, so
swapped or quantized weights need no recompile). The KV buffers are written at
an array position (cache.BufferedKV) and RoPE takes that position as an array,
so a step retraces only when the buffer grows (every KVCache.step tokens).
"""

from __future__ import annotations

from functools import partial

import mlx.core as mx

from ..cache import BufferedKV, DeltaNetCache, KVCache
from ..kernels.decode import MAX_T
from .attention import buffer_mask, buffer_slots
from .decoder import StepContext


def usable(input_ids: mx.array, cache) -> bool:
    """A plain cache and one new token per row (left-padded rows too), or up to MAX_T
    with per-token states kept (a verify call, unpadded)."""
    if input_ids.ndim != 2:
        return False
    if input_ids.shape[1] == 1 and not verifying(cache):
        return _plain(input_ids, cache, padded=True)
    return _plain(input_ids, cache) and verifying(cache) and input_ids.shape[1] <= MAX_T


def draftable(next_ids: mx.array, cache) -> bool:
    """The MTP head's step on a plain cache, up to MAX_T tokens."""
    return _plain(next_ids, cache) and next_ids.shape[1] <= MAX_T


def _plain(ids: mx.array, cache, padded: bool = False) -> bool:
    """Unpadded rows (or, `padded`, left-padded ones too), and every KV cache a plain one
    in step with the cache (not, say, a quantized KV cache: those take the eager layers)."""
    if cache is None or ids.ndim != 2 or (cache.left_pad is not None and not padded):
        return False
    return all(type(c) is KVCache and c.offset == cache.offset
               for c in cache if isinstance(c, KVCache))


def verifying(cache) -> bool:
    return any(isinstance(c, DeltaNetCache) and c.keep_steps for c in cache)


def deltanet_step(layer, verify, x, conv_state, state):
    c = DeltaNetCache()
    c.conv_state, c.recurrent_state, c.keep_steps = conv_state, state, verify
    x = layer(x, c, StepContext())
    kept = (c.step_window, *c.step_terms) if verify else ()
    return (x, c.conv_state, c.recurrent_state, *kept)


def attention_step(layer, x, keys, values, offset, left_pad=None):
    kv = BufferedKV(keys, values, offset)
    mask, positions = buffer_mask(x.shape[1], offset, keys.shape[2]), offset
    if left_pad is not None:  # a left-padded batch: row b starts at slot left_pad[b]
        mask = mask & (buffer_slots(keys.shape[2]) >= left_pad[:, None, None, None])
        positions = offset - left_pad
    x = layer(x, kv, StepContext(mask, positions))
    return x, kv.keys, kv.values


def mtp_step(mtp, e, h, keys, values, offset):
    kv = BufferedKV(keys, values, offset)
    ctx = StepContext(buffer_mask(h.shape[1], offset, keys.shape[2]), offset)
    return mtp.forward(e, h, kv, ctx), kv.keys, kv.values


class CompiledSteps:
    """The compiled steps of one model's layers, built on first use. It holds the
    layers, never the model: the model holds it, and a cycle would keep a dropped
    model's weights alive until the garbage collector runs."""

    def __init__(self, layers, mtp=None):
        self.layers, self.mtp = list(layers), mtp
        self._steps = {}

    def stale(self, layers, mtp) -> bool:
        return (mtp is not self.mtp or len(layers) != len(self.layers)
                or any(a is not b for a, b in zip(layers, self.layers)))

    def _step(self, i: int, verify: bool, padded: bool = False):
        if (i, verify, padded) not in self._steps:
            layer = self.layers[i]
            fn = partial(deltanet_step, layer, verify) if layer.is_linear else partial(
                attention_step, layer)
            self._steps[i, verify, padded] = mx.compile(fn, inputs=layer)
        return self._steps[i, verify, padded]

    def layer(self, i: int, x: mx.array, cache, verify: bool = False) -> mx.array:
        """Layer i on x [B, T, hidden], its cache updated; `verify`: keep per-token
        states (bench/mtp.py times these one by one)."""
        c = cache[i]
        if self.layers[i].is_linear:
            m = self.layers[i].linear_attn
            if c.conv_state is None:
                c.conv_state = mx.zeros((x.shape[0], m.kernel - 1, m.conv_dim), x.dtype)
                c.recurrent_state = mx.zeros((x.shape[0], m.nv, m.dv, m.dk), mx.float32)
            first = c.recurrent_state
            x, c.conv_state, c.recurrent_state, *kept = self._step(i, verify)(
                x, c.conv_state, c.recurrent_state)
            if verify:
                c.step_first, c.step_window, c.step_terms = first, kept[0], tuple(kept[1:])
            return x
        pad = () if cache.left_pad is None else (cache.left_pad,)
        return self._attention(self._step(i, False, bool(pad)), self.layers[i].self_attn, x, c,
                               after=pad)

    @staticmethod
    def _attention(step, attn, x, c: KVCache, *extra, after=()):
        B, T = x.shape[:2]
        c.reserve(T, B, attn.n_kv_heads, attn.head_dim, x.dtype)
        x, c.keys, c.values = step(*extra, x, c.keys, c.values, mx.array(c.offset, mx.int32),
                                   *after)
        c.offset += T
        return x

    def draft(self, e: mx.array, h: mx.array, cache) -> mx.array:
        """The MTP head's step on its HybridCache (one attention layer)."""
        if "mtp" not in self._steps:
            self._steps["mtp"] = mx.compile(partial(mtp_step, self.mtp), inputs=self.mtp)
        out = self._attention(self._steps["mtp"], self.mtp.layers[0].self_attn, h, cache[0], e)
        cache.advance(h.shape[1])
        return out
