"""Causal attention on the CPU, in blocks of queries.

MLX's CPU scaled_dot_product_attention scores every query against every key and
masks afterwards, so a causal prefill of L tokens computes the whole L x L square.
Here the queries go in blocks of BLOCK, each against the keys up to its own last
row: the masked upper half is mostly skipped. (Metal's kernel skips masked blocks
itself.) Figures: bench/RESULTS.md, "End-to-end".
"""

from __future__ import annotations

import mlx.core as mx

from ..model.attention import Attention

BLOCK = 256  # query rows per block (256 measured faster than 512 and 1024 at L = 2048)


class BlockedCausalAttention(Attention):
    def attend(self, q, k, v, mask) -> mx.array:
        L, S = q.shape[2], k.shape[2]
        if not (isinstance(mask, str) and mask == "causal") or L <= BLOCK:
            return super().attend(q, k, v, mask)
        outs = []
        for start in range(0, L, BLOCK):
            end = min(start + BLOCK, L)
            keys = S - L + end  # "causal" aligns the last query with the last key
            outs.append(super().attend(q[:, :, start:end], k[:, :, :keys], v[:, :, :keys],
                                       "causal"))
        return mx.concatenate(outs, axis=2)
