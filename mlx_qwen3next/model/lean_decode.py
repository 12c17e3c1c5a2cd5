"""Lean decode: one token per row, each decoder layer's step as one compiled graph.

The plain path (DecoderLayer.__call__) handles every case and stays the
reference; this one covers the common one, a [B, 1] step on a cache with no
left padding and no speculative bookkeeping, with far fewer primitives per
token (bench/measures.py:count_primitives). How:

- each layer's whole step (norms, mixer, residuals, MLP) is one mx.compile'd
  function with its cache arrays passed in and returned; the layer's weights
  are captured inputs (`inputs=layer`), read afresh each call, so swapping or
  quantizing them needs no recompile and old weights are never kept alive;
- activations stay [B, hidden] (a Linear on a 3-D input adds Flatten/Unflatten);
- the KV cache is written at an array position (mx.slice_update) and keys past
  it are masked, so the graph retraces only when the buffer grows (every
  KVCache.step tokens), not every token; RoPE takes the position as an array too;
- DeltaNet and MoE steps are rewritten for one token in few view ops
  (lean_layers.py).
"""

from __future__ import annotations

from functools import partial

import mlx.core as mx

from ..cache import DeltaNetCache, KVCache
from .decoder import StepContext
from .lean_layers import attention_layer, deltanet_layer, rope_tables


def usable(input_ids: mx.array, cache) -> bool:
    """Whether the lean path applies: one new token per row, a plain (unpadded) cache."""
    if cache is None or input_ids.ndim != 2 or input_ids.shape[1] != 1:
        return False
    if cache.left_pad is not None:
        return False
    return not any(isinstance(c, DeltaNetCache) and c.keep_steps for c in cache)


def _final_norm(norm, x):
    return norm(x)[:, None]


class LeanDecoder:
    """The compiled per-layer steps of one Qwen3NextModel (built once, on first use).

    It holds the model's parts, never the model: the model holds it, and a cycle
    would keep a dropped model's weights alive until the garbage collector runs."""

    def __init__(self, model):
        self.embed_tokens, self.norm = model.embed_tokens, model.norm
        self.layers = list(model.layers)
        self.steps = [self._compile(layer) for layer in self.layers]
        self.final_norm = mx.compile(partial(_final_norm, self.norm), inputs=self.norm)
        self._rope = {}  # layer index -> (rope module, its tables)

    @staticmethod
    def _compile(layer):
        fn = deltanet_layer if layer.is_linear else attention_layer
        return mx.compile(partial(fn, layer), inputs=layer)

    def stale(self, model) -> bool:
        parts = [model.embed_tokens, model.norm, *model.layers]
        mine = [self.embed_tokens, self.norm, *self.layers]
        return len(parts) != len(mine) or any(a is not b for a, b in zip(parts, mine))

    def hidden(self, input_ids: mx.array, cache) -> mx.array:
        """Post-final-norm hidden states [B, 1, hidden]; advances `cache` by one."""
        x = self.embed_tokens(input_ids.reshape(-1))
        position = mx.array([cache.offset], mx.int32)
        for i, (layer, c) in enumerate(zip(self.layers, cache)):
            if layer.is_linear:
                x = self._deltanet(i, x, c)
            elif type(c) is KVCache:
                x = self._attention(i, x, c, position, cache.offset)
            else:  # e.g. a quantized KV cache: the plain layer, one token
                ctx = StepContext(None, cache.offset)
                x = layer(x[:, None], c, ctx)[:, 0]
        cache.advance(1)
        return self.final_norm(x)

    def _deltanet(self, i: int, x: mx.array, c: DeltaNetCache) -> mx.array:
        if c.conv_state is None:
            m = self.layers[i].linear_attn
            c.conv_state = mx.zeros((x.shape[0], m.kernel - 1, m.conv_dim), x.dtype)
            c.recurrent_state = mx.zeros((x.shape[0], m.nv, m.dv, m.dk), mx.float32)
        x, c.conv_state, c.recurrent_state = self.steps[i](x, c.conv_state, c.recurrent_state)
        return x

    def _attention(self, i: int, x, c: KVCache, position: mx.array, offset: int) -> mx.array:
        attn = self.layers[i].self_attn
        c.reserve(1, x.shape[0], attn.n_kv_heads, attn.head_dim, x.dtype)
        # where this layer's buffer is written (its own offset; the model's for RoPE)
        slot = position if c.offset == offset else mx.array([c.offset], mx.int32)
        x, c.keys, c.values = self.steps[i](x, c.keys, c.values, slot, position,
                                            *self._rope_tables(i, attn))
        c.offset += 1
        return x

    def _rope_tables(self, i: int, attn):
        rope, tables = self._rope.get(i, (None, None))
        if rope is not attn.rope:  # set_rope_scaling swaps the module
            rope, tables = attn.rope, rope_tables(attn.rope, attn.head_dim)
            self._rope[i] = (rope, tables)
        return tables
