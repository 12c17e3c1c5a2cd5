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

The verify forward of speculative decoding (T <= 5 tokens, `keep_steps` set) runs
the same way with lean_verify.py's T-token steps: one trace per (T, KV buffer
size); each DeltaNet cache gets the per-token states a rewind needs as a
lean_verify.VerifyStates.
"""

from __future__ import annotations

from functools import partial

import mlx.core as mx

from ..cache import DeltaNetCache, KVCache
from . import lean_verify
from .decoder import step_context
from .lean_layers import attention_layer, deltanet_layer, rope_tables
from .lean_verify import VerifyStates


def usable(input_ids: mx.array, cache) -> bool:
    """Whether the lean path applies: a plain (unpadded) cache and one new token per
    row, or up to lean_verify.MAX_TOKENS with per-token states kept (a verify call)."""
    if cache is None or input_ids.ndim != 2 or cache.left_pad is not None:
        return False
    T = input_ids.shape[1]
    if verifying(cache):
        return 1 <= T <= lean_verify.MAX_TOKENS
    return T == 1


def verifying(cache) -> bool:
    return any(isinstance(c, DeltaNetCache) and c.keep_steps for c in cache)


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
        self.verify_steps = [self._compile(layer, verify=True) for layer in self.layers]
        self.final_norm = mx.compile(partial(_final_norm, self.norm), inputs=self.norm)
        self._rope = {}  # layer index -> (rope module, its tables)

    @staticmethod
    def _compile(layer, verify=False):
        if verify:  # looked up on the module, so tests can count traces by patching it
            fn = lean_verify.deltanet_layer if layer.is_linear else lean_verify.attention_layer
        else:
            fn = deltanet_layer if layer.is_linear else attention_layer
        return mx.compile(partial(fn, layer), inputs=layer)

    def stale(self, model) -> bool:
        parts = [model.embed_tokens, model.norm, *model.layers]
        mine = [self.embed_tokens, self.norm, *self.layers]
        return len(parts) != len(mine) or any(a is not b for a, b in zip(parts, mine))

    def hidden(self, input_ids: mx.array, cache) -> mx.array:
        """Post-final-norm hidden states [B, T, hidden]; advances `cache` by T.
        With keep_steps set it is a verify call (lean_verify.py)."""
        B, T = input_ids.shape
        verify = verifying(cache)
        x = self.embed_tokens(input_ids.reshape(-1))  # [B*T, hidden], row b*T + t
        position = mx.array([cache.offset], mx.int32)
        for i in range(len(self.layers)):
            x = self.layer_step(i, x, cache, position, B, verify)
        cache.advance(T)
        x = self.final_norm(x)
        return x if T == 1 else x.reshape(B, T, -1)

    def layer_step(self, i: int, x: mx.array, cache, position: mx.array, rows: int,
                   verify: bool) -> mx.array:
        """Layer i on x [rows*T, hidden] (bench/mtp.py times the layers one by one)."""
        layer, c = self.layers[i], cache[i]
        if layer.is_linear:
            return self._deltanet(i, x, c, rows, verify)
        if type(c) is KVCache:
            return self._attention(i, x, c, position, cache.offset, rows, verify)
        # e.g. a quantized KV cache: the plain layer
        T = x.shape[0] // rows
        ctx = step_context(cache, T, x.dtype)
        return layer(x.reshape(rows, T, -1), c, ctx).reshape(x.shape)

    def _deltanet(self, i: int, x, c: DeltaNetCache, rows: int, verify: bool) -> mx.array:
        if c.conv_state is None:
            m = self.layers[i].linear_attn
            c.conv_state = mx.zeros((rows, m.kernel - 1, m.conv_dim), x.dtype)
            c.recurrent_state = mx.zeros((rows, m.nv, m.dv, m.dk), mx.float32)
        if not verify:
            x, c.conv_state, c.recurrent_state = self.steps[i](
                x, c.conv_state, c.recurrent_state)
            return x
        first, width = c.recurrent_state, c.conv_state.shape[1]
        x, window, c.recurrent_state, *terms = self.verify_steps[i](x, c.conv_state, first)
        c.conv_state = window[:, window.shape[1] - width:]
        if c.keep_steps:
            c.step_states = VerifyStates(first, c.recurrent_state, *terms)
            c.step_window = window
        return x

    def _attention(self, i: int, x, c: KVCache, position: mx.array, offset: int, rows: int,
                   verify: bool) -> mx.array:
        attn, T = self.layers[i].self_attn, x.shape[0] // rows
        c.reserve(T, rows, attn.n_kv_heads, attn.head_dim, x.dtype)
        # where this layer's buffer is written (its own offset; the model's for RoPE)
        slot = position if c.offset == offset else mx.array([c.offset], mx.int32)
        step = self.verify_steps[i] if verify else self.steps[i]
        x, c.keys, c.values = step(x, c.keys, c.values, slot, position,
                                   *self._rope_tables(i, attn))
        c.offset += T
        return x

    def _rope_tables(self, i: int, attn):
        rope, tables = self._rope.get(i, (None, None))
        if rope is not attn.rope:  # set_rope_scaling swaps the module
            rope, tables = attn.rope, rope_tables(attn.rope, attn.head_dim)
            self._rope[i] = (rope, tables)
        return tables


def mtp_usable(next_ids: mx.array, cache) -> bool:
    """Whether the MTP head's step can take the lean path: a few tokens on a plain KV cache."""
    return (cache is not None and next_ids.ndim == 2 and cache.left_pad is None
            and 1 <= next_ids.shape[1] <= lean_verify.MAX_TOKENS and type(cache[0]) is KVCache)


def _mtp_step(mtp, layer_fn, e, h, keys, values, slot, position, *rope):
    x = mtp.fc(mx.concatenate([mtp.pre_fc_norm_embedding(e), mtp.pre_fc_norm_hidden(h)],
                              axis=-1))
    x, keys, values = layer_fn(mtp.layers[0], x, keys, values, slot, position, *rope)
    return mtp.norm(x), keys, values


class LeanMTP:
    """The MTP head's draft step (fc, its attention layer, norm) as one compiled graph,
    for T <= lean_verify.MAX_TOKENS tokens: one trace per (T, KV buffer size)."""

    def __init__(self, mtp):
        self.mtp = mtp
        self.steps = {verify: mx.compile(partial(
            _mtp_step, mtp, lean_verify.attention_layer if verify else attention_layer),
            inputs=mtp) for verify in (False, True)}
        self._rope = (None, None)

    def __call__(self, embeddings: mx.array, hidden: mx.array, cache) -> mx.array:
        """embeddings, hidden [B, T, hidden] -> the head's output [B, T, hidden]."""
        B, T, H = hidden.shape
        attn, c = self.mtp.layers[0].self_attn, cache[0]
        c.reserve(T, B, attn.n_kv_heads, attn.head_dim, hidden.dtype)
        position = mx.array([cache.offset], mx.int32)
        slot = position if c.offset == cache.offset else mx.array([c.offset], mx.int32)
        out, c.keys, c.values = self.steps[T > 1](
            embeddings.reshape(B * T, H), hidden.reshape(B * T, H), c.keys, c.values, slot,
            position, *self._rope_tables(attn))
        c.offset += T
        cache.advance(T)
        return out.reshape(B, T, H)

    def _rope_tables(self, attn):
        if self._rope[0] is not attn.rope:  # set_rope_scaling swaps the module
            self._rope = (attn.rope, rope_tables(attn.rope, attn.head_dim))
        return self._rope[1]
