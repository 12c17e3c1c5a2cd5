"""The multi-token-prediction head: one extra decoder layer that drafts the token after next.

e = pre_fc_norm_embedding(embed(next_token)); h = pre_fc_norm_hidden(hidden);
x = fc([e, h]); x = layers[0](x) with its own KV cache; out = norm(x).
Draft logits are lm_head(out); `out` is the hidden input of a further draft step.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..cache import HybridCache
from ..config import ModelConfig
from .decoder import DecoderLayer, StepContext, step_context
from .norms import RMSNorm


class MTP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        H = cfg.hidden_size
        self.fc = nn.Linear(2 * H, H, bias=False)
        self.pre_fc_norm_embedding = RMSNorm(H, eps=cfg.rms_norm_eps)
        self.pre_fc_norm_hidden = RMSNorm(H, eps=cfg.rms_norm_eps)
        self.norm = RMSNorm(H, eps=cfg.rms_norm_eps)
        self.layers = [DecoderLayer(cfg, linear=False, moe=cfg.num_experts > 0)]

    def make_cache(self) -> HybridCache:
        return HybridCache(["full_attention"])

    def __call__(self, embeddings: mx.array, hidden: mx.array, cache: HybridCache | None = None):
        """embeddings of the next tokens and the main model's post-norm hidden states -> out."""
        ctx = step_context(cache, hidden.shape[1], hidden.dtype)
        out = self.forward(embeddings, hidden, cache[0] if cache is not None else None, ctx)
        if cache is not None:
            cache.advance(hidden.shape[1])
        return out

    def forward(self, embeddings, hidden, layer_cache, ctx: StepContext) -> mx.array:
        """The head on its layer's own cache (a KVCache, or a BufferedKV when compiled)."""
        e = self.pre_fc_norm_embedding(embeddings)
        h = self.pre_fc_norm_hidden(hidden)
        x = self.fc(mx.concatenate([e, h], axis=-1))
        return self.norm(self.layers[0](x, layer_cache, ctx))
