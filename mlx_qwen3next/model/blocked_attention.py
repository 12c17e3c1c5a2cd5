"""Causal attention for long prefills on the CPU, in query blocks.

MLX's CPU scaled_dot_product_attention scores every query against every key,
the masked half included, with the key/value heads repeated for GQA. Here each
block of queries meets only the keys at or before its last position, and the
query heads sharing a key/value head are folded into one matmul. Same result
(tests compare it with mx.fast.scaled_dot_product_attention). Measured at 2048
tokens with the real model's 16 / 2 heads of 256 on a 2-core CPU: 1.0-1.1 s
against 1.8-1.9 s for the attention op alone (blocks of 128, 512 and 1024 were
slower than 256); a whole 4-layer prefill of 2048 tokens was within run-to-run
noise either way (19.5 / 19.7 s against 18.8 / 21.3 s). The score matrix held at
once shrinks from all heads x L x L to one block's: blocks are evaluated one at
a time (outside mx.compile), which also bounds the softmax's intermediates.
"""

from __future__ import annotations

import mlx.core as mx

from ..kernels._prep import eval_if_eager
from .activations import masked_softmax

BLOCK = 256
MIN_LENGTH = 512  # shorter prompts: the fused op is as fast


def use_blocked(L: int, mask) -> bool:
    return mask == "causal" and L >= MIN_LENGTH and mx.default_device() == mx.cpu


def blocked_causal_attention(q, k, v, scale: float, block: int = BLOCK):
    """q [B, H, L, D]; k, v [B, Hkv, S, D] with the L queries at positions S-L..S-1."""
    B, H, L, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    rep, offset = H // Hkv, S - L
    q = (q * scale).reshape(B, Hkv, rep, L, D)
    outs = []
    for i0 in range(0, L, block):
        i1 = min(i0 + block, L)
        n, keys = i1 - i0, offset + i1
        qb = q[:, :, :, i0:i1, :].reshape(B, Hkv, rep * n, D)
        scores = (qb @ k[:, :, :keys, :].swapaxes(-1, -2)).reshape(B, Hkv, rep, n, keys)
        q_pos = mx.arange(offset + i0, offset + i1)[:, None]
        visible = mx.arange(keys)[None, :] <= q_pos  # [n, keys]
        probs = masked_softmax(scores.astype(mx.float32), visible).astype(v.dtype)
        out = probs.reshape(B, Hkv, rep * n, keys) @ v[:, :, :keys, :]
        outs.append(out.reshape(B, Hkv, rep, n, D))
        eval_if_eager(outs[-1])  # one block's scores alive at a time
    return mx.concatenate(outs, axis=3).reshape(B, H, L, D)
