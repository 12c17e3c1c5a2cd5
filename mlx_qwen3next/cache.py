"""The hybrid cache: a KV cache per attention layer, conv + recurrent state per DeltaNet layer.

A `HybridCache` is a list of per-layer caches with the shared bookkeeping: how
many positions are filled (`offset`) and, for left-padded batches, how many
leading positions of each row are padding (`left_pad`).

Going back: DeltaNet state cannot be trimmed, so the cache goes back to a `Mark`
(`mark()` / `restore()`). A mark keeps each attention layer's offset (KV caches
only append, so trimming back to it restores them exactly) and references to each
DeltaNet layer's states (new arrays every step, so nothing is copied). It holds no
slice of the KV buffers, which would keep an old buffer alive once the cache grows
or is written by copy. The price: a mark is valid only while the cache moves forward
from it or back to it (never back to an older mark, forward on another path, then to
this one); restoring a mark invalidates newer ones. Cost: the DeltaNet state, about
74 MB per mark on the real model, nothing for the KV cache.

Within one speculative verification, `keep_steps` + `rewind` go back to any of
its tokens from the per-token terms the delta rule kept, without a mark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import mlx.core as mx

from .kernels.decode import state_after


class KVCache:
    """Keys and values [B, kv_heads, T, head_dim], grown in steps to avoid re-allocation."""

    step = 256

    def __init__(self):
        self.keys: Optional[mx.array] = None
        self.values: Optional[mx.array] = None
        self.offset = 0

    def reserve(self, n: int, batch: int, heads: int, k_dim: int, dtype, v_dim=None):
        """Room for n more positions. Buffers grow to a multiple of `step` positions, so
        compiled steps over the whole buffer (model/compiled.py) see few distinct shapes."""
        end = self.offset + n
        if self.keys is not None and end <= self.keys.shape[2]:
            return
        grow = -(-end // self.step) * self.step - self.offset
        new_k = mx.zeros((batch, heads, grow, k_dim), dtype)
        new_v = mx.zeros((batch, heads, grow, v_dim or k_dim), dtype)
        if self.keys is None:
            self.keys, self.values = new_k, new_v
        else:
            self.keys = mx.concatenate([self.keys[..., : self.offset, :], new_k], axis=2)
            self.values = mx.concatenate([self.values[..., : self.offset, :], new_v], axis=2)

    def update_and_fetch(self, keys: mx.array, values: mx.array):
        B, H, L, _ = keys.shape
        end = self.offset + L
        self.reserve(L, B, H, keys.shape[-1], keys.dtype, values.shape[-1])
        self.keys[..., self.offset : end, :] = keys
        self.values[..., self.offset : end, :] = values
        self.offset = end
        return self.keys[..., :end, :], self.values[..., :end, :]

    def trim(self, n: int) -> int:
        n = min(n, self.offset)
        self.offset -= n
        return n

    @property
    def nbytes(self) -> int:
        if self.keys is None:
            return 0
        per_pos = (self.keys.nbytes + self.values.nbytes) // self.keys.shape[2]
        return per_pos * self.offset

    def state(self):
        if self.keys is None:
            return None
        return self.keys[..., : self.offset, :], self.values[..., : self.offset, :]

    def set_state(self, state):
        if state is None:
            self.keys = self.values = None
            self.offset = 0
        else:
            self.keys, self.values = state
            self.offset = self.keys.shape[2]


class DeltaNetCache:
    """conv_state [B, kernel-1, conv_dim] and recurrent state [B, Hv, Dv, Dk] (float32).

    With `keep_steps` set (speculative verification), the layer also keeps what
    `rewind` needs to go back to any token of the call: the state before it, the
    delta rule's per-token terms (kernels/decode.py's state_after) and the conv window.
    """

    def __init__(self):
        self.conv_state: Optional[mx.array] = None
        self.recurrent_state: Optional[mx.array] = None
        self.keep_steps = False
        self.step_first: Optional[mx.array] = None  # the state before the last call
        self.step_terms: Optional[tuple] = None
        self.step_window: Optional[mx.array] = None  # [conv_state, x] of the last call

    @property
    def steps(self) -> int:
        """Tokens of the last call made with keep_steps (0: none kept)."""
        return 0 if self.step_terms is None else self.step_terms[0].shape[-2]

    def rewind(self, keep: int):
        """Keep only the first `keep` tokens of the last (verification) call."""
        self.recurrent_state = state_after(self.step_first, self.step_terms, keep)
        width = self.conv_state.shape[1]
        self.conv_state = self.step_window[:, keep : keep + width, :]
        self.release_steps()

    def release_steps(self):
        self.step_first = self.step_terms = self.step_window = None

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.conv_state, self.recurrent_state) if a is not None)

    def state(self):
        return self.conv_state, self.recurrent_state

    def set_state(self, state):
        self.conv_state, self.recurrent_state = state


class BufferedKV:
    """A KVCache's whole buffers inside a compiled step: update_and_fetch writes the
    new keys at an array position (a slice update) and returns the whole buffers, so
    the step's graph depends on the buffer size only; attention masks the slots past
    the position (attention.buffer_mask)."""

    def __init__(self, keys: mx.array, values: mx.array, offset: mx.array):
        self.keys, self.values, self.offset = keys, values, offset

    def update_and_fetch(self, keys: mx.array, values: mx.array):
        start = self.offset.reshape(1)
        self.keys = mx.slice_update(self.keys, keys, start, axes=(2,))
        self.values = mx.slice_update(self.values, values, start, axes=(2,))
        return self.keys, self.values


@dataclass(frozen=True)
class Mark:
    """A HybridCache's position (see the module note)."""

    offset: int
    left_pad: Optional[mx.array]
    layers: tuple  # int (KV offset) or (conv_state, recurrent_state) per layer

    def arrays(self) -> list[mx.array]:
        return [a for s in self.layers if isinstance(s, tuple) for a in s if a is not None]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays())


def marks_nbytes(marks) -> int:
    """Bytes held by a set of marks, counting shared states once."""
    unique = {id(a): a for m in marks for a in m.arrays()}
    return sum(a.nbytes for a in unique.values())


class HybridCache(list):
    """Per-layer caches, indexable like mlx-lm's list of caches."""

    def __init__(self, layer_kinds: list[str]):
        super().__init__(
            DeltaNetCache() if kind == "linear_attention" else KVCache() for kind in layer_kinds
        )
        self.offset = 0
        self.left_pad: Optional[mx.array] = None

    def positions(self) -> mx.array | int:
        """RoPE offset of the next token: per row when the batch is left-padded."""
        if self.left_pad is None:
            return self.offset
        return self.offset - self.left_pad

    def advance(self, n: int):
        self.offset += n

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self)

    def arrays(self) -> list[mx.array]:
        """Every array the cache holds (to evaluate it after a prefill chunk)."""
        return [a for c in self for a in (c.state() or ()) if isinstance(a, mx.array)]

    def mark(self) -> Mark:
        layers = tuple(c.offset if isinstance(c, KVCache) else c.state() for c in self)
        return Mark(self.offset, self.left_pad, layers)

    def restore(self, m: Mark):
        """Go back (or forward again) to `m`; see the module note for when that is valid."""
        for c, state in zip(self, m.layers):
            if isinstance(c, KVCache):
                c.trim(c.offset - state)
            else:
                c.set_state(state)
        self.offset, self.left_pad = m.offset, m.left_pad

    def keep_steps(self, on: bool = True):
        """Make DeltaNet layers keep per-token states (for `rewind`) on the next calls."""
        for c in self:
            if isinstance(c, DeltaNetCache):
                c.keep_steps = on

    def rewind(self, drop: int):
        """Forget the last `drop` tokens of the last call, made with keep_steps on.
        Either way the per-token states that call kept are released."""
        if drop <= 0:
            for c in self:
                if isinstance(c, DeltaNetCache):
                    c.release_steps()
            return
        for c in self:
            if isinstance(c, KVCache):
                c.trim(drop)
            elif c.recurrent_state is not None:  # empty: a layer another rank runs
                c.rewind(c.steps - drop)
        self.offset -= drop

    def trim_kv(self, n: int):
        """Drop the last n positions from the KV caches only (DeltaNet state is untouched)."""
        for c in self:
            if isinstance(c, KVCache):
                c.trim(n)
        self.offset -= n
