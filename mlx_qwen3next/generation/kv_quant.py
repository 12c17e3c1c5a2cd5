"""An optional 8-bit (or 4-bit) KV cache for the attention layers.

Keys and values are stored with `mx.quantize` (affine, one scale and bias per
group along head_dim): 8 bits + 2 * 16 / 64 bits per element instead of 16, so
about half the memory of a bf16 cache. Attention still receives full-precision
keys and values (dequantized on fetch), so the model code is unchanged; a fused
quantized attention would save the dequantize pass (see the report in the
commit that added this file).
"""

from __future__ import annotations

from typing import Optional

import mlx.core as mx

from ..cache import KVCache


def _group_size(head_dim: int, wanted: int) -> int:
    for g in (wanted, 64, 32):
        if head_dim % g == 0:
            return g
    raise ValueError(f"head_dim {head_dim} cannot be quantized in groups of 32 or 64")


class QuantizedKVCache(KVCache):
    """A KVCache that stores (weights, scales, biases) triples instead of floats."""

    def __init__(self, bits: int = 8, group_size: int = 64):
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"kv_bits must be 4 or 8, got {bits}")
        self.bits, self.group_size = bits, group_size
        self.qkeys: Optional[list] = None
        self.qvalues: Optional[list] = None
        self.dtype = None

    def _quantize(self, x: mx.array) -> list:
        return list(mx.quantize(x, group_size=self.group_size, bits=self.bits))

    def _dequantize(self, q: list, end: int) -> mx.array:
        w, s, b = (a[..., :end, :] for a in q)
        return mx.dequantize(w, s, b, group_size=self.group_size, bits=self.bits).astype(
            self.dtype
        )

    def update_and_fetch(self, keys: mx.array, values: mx.array):
        if self.qkeys is None:
            self.group_size = _group_size(keys.shape[-1], self.group_size)
            self.dtype = keys.dtype
        L = keys.shape[2]
        end = self.offset + L
        new_k, new_v = self._quantize(keys), self._quantize(values)
        if self.qkeys is None or end > self.qkeys[0].shape[2]:
            grow = ((L + self.step - 1) // self.step) * self.step

            def extend(old, new):
                pad = [mx.zeros((*a.shape[:2], grow, a.shape[-1]), a.dtype) for a in new]
                if old is None:
                    return pad
                return [mx.concatenate([o[..., : self.offset, :], p], axis=2)
                        for o, p in zip(old, pad)]

            self.qkeys, self.qvalues = extend(self.qkeys, new_k), extend(self.qvalues, new_v)
        for store, new in ((self.qkeys, new_k), (self.qvalues, new_v)):
            for a, n in zip(store, new):
                a[..., self.offset : end, :] = n
        self.offset = end
        return self._dequantize(self.qkeys, end), self._dequantize(self.qvalues, end)

    @property
    def nbytes(self) -> int:
        if self.qkeys is None:
            return 0
        cap = self.qkeys[0].shape[2]
        per_pos = sum(a.nbytes for a in self.qkeys + self.qvalues) // cap
        return per_pos * self.offset

    def state(self):
        """Six arrays: key weights, scales, biases, then the same for values."""
        if self.qkeys is None:
            return None
        return tuple(a[..., : self.offset, :] for a in self.qkeys + self.qvalues)

    def set_state(self, state):
        if state is None:
            self.qkeys = self.qvalues = None
            self.offset = 0
        else:
            self.qkeys, self.qvalues = list(state[:3]), list(state[3:])
            self.dtype = state[1].dtype  # scales keep the input dtype
            self.offset = self.qkeys[0].shape[2]
            head_dim = self.qkeys[0].shape[-1] * 32 // self.bits
            self.group_size = head_dim // self.qkeys[1].shape[-1]

def quantize_kv(cache, bits: int = 8, group_size: int = 64):
    """Swap every attention layer's KVCache in a HybridCache for a QuantizedKVCache,
    quantizing what it already holds. Returns the cache."""
    for i, c in enumerate(cache):
        if isinstance(c, KVCache) and not isinstance(c, QuantizedKVCache):
            q = QuantizedKVCache(bits, group_size)
            if c.offset:
                keys, values = c.state()
                q.update_and_fetch(keys, values)
            cache[i] = q
    return cache
