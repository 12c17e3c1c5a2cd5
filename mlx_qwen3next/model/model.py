"""Qwen3-Next: embeddings, the hybrid stack of decoder layers, final norm, lm_head, MTP head."""

from __future__ import annotations

from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from ..cache import HybridCache
from ..config import ModelConfig
from . import compiled
from .decoder import DecoderLayer, step_context
from .mtp import MTP
from .norms import RMSNorm


class Qwen3NextModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = [
            DecoderLayer(cfg, cfg.is_linear(i), cfg.is_moe(i))
            for i in range(cfg.num_hidden_layers)
        ]
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)

    def __call__(self, input_ids: mx.array, cache: Optional[HybridCache] = None,
                 steps: Optional[compiled.CompiledSteps] = None) -> mx.array:
        """Post-final-norm hidden states; `steps` runs the layers compiled where they apply."""
        x = self.run(self.embed_tokens(input_ids), input_ids, cache, steps)
        if cache is not None:
            cache.advance(input_ids.shape[1])
        return self.norm(x)

    def run(self, x: mx.array, input_ids: mx.array, cache: Optional[HybridCache] = None,
            steps: Optional[compiled.CompiledSteps] = None, layers: Optional[range] = None):
        """The decoder layers `layers` (default: all) on x [B, T, hidden], the embedded
        `input_ids`; the cache is not advanced (a pipeline stage runs a range of them)."""
        layers = range(len(self.layers)) if layers is None else layers
        if steps is not None and compiled.usable(input_ids, cache):
            verify = compiled.verifying(cache)
            for i in layers:
                x = steps.layer(i, x, cache, verify)
        else:
            ctx = step_context(cache, input_ids.shape[1], x.dtype)
            for i in layers:
                x = self.layers[i](x, cache[i] if cache is not None else None, ctx)
        return x


class Model(nn.Module):
    """`model(input_ids [B, T], cache=None) -> logits [B, T, vocab]`."""

    def __init__(self, cfg: ModelConfig, mtp: bool = False):
        super().__init__()
        self.config = cfg
        self.model = Qwen3NextModel(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if mtp:
            self.mtp = MTP(cfg)
        self.compile_steps = True  # compiled decode / verify / draft steps (compiled.py)
        self._steps = None

    @property
    def layers(self):
        return self.model.layers

    @property
    def has_mtp(self) -> bool:
        return "mtp" in self

    def make_cache(self, left_pad: Optional[mx.array] = None) -> HybridCache:
        """A fresh hybrid cache; `left_pad[b]` = padding tokens at the start of row b."""
        cache = HybridCache(self.config.layer_types)
        if left_pad is not None:
            cache.left_pad = mx.array(left_pad, mx.int32)
        return cache

    def compiled_steps(self) -> Optional[compiled.CompiledSteps]:
        if not self.compile_steps:
            return None
        mtp = self.mtp if self.has_mtp else None
        if self._steps is None or self._steps.stale(self.layers, mtp):
            self._steps = compiled.CompiledSteps(self.layers, mtp)
        return self._steps

    def reset_compiled(self):
        """Trace the compiled steps afresh (after swapping a module's non-parameter state)."""
        self._steps = None

    def hidden(self, input_ids: mx.array, cache: Optional[HybridCache] = None) -> mx.array:
        """Post-final-norm hidden states [B, T, hidden] (the MTP head's input)."""
        return self.model(input_ids, cache, self.compiled_steps() if cache is not None else None)

    def logits(self, hidden: mx.array) -> mx.array:
        if self.config.tie_word_embeddings:
            return self.model.embed_tokens.as_linear(hidden)
        return self.lm_head(hidden)

    def __call__(self, input_ids: mx.array, cache: Optional[HybridCache] = None) -> mx.array:
        return self.logits(self.hidden(input_ids, cache))

    def mtp_forward(self, hidden: mx.array, next_ids: mx.array,
                    cache: Optional[HybridCache] = None, last_only: bool = False,
                    logits: bool = True):
        """One MTP draft step: (draft logits, MTP output = the next step's hidden input).
        `last_only`: logits of the last position only, all a draft needs (lm_head is the
        costliest read of a draft step, and more so for several positions). `logits=False`:
        (None, output), for a prefill that only fills the head's cache."""
        return self.mtp_head(self.model.embed_tokens(next_ids), hidden, next_ids, cache,
                             last_only, logits)

    def mtp_head(self, e: mx.array, hidden: mx.array, next_ids: mx.array,
                 cache: Optional[HybridCache] = None, last_only: bool = False,
                 logits: bool = True):
        """`mtp_forward` from the next tokens' embeddings `e` (a pipeline's last stage
        receives them from the first, which holds the embedding)."""
        steps = self.compiled_steps() if cache is not None else None
        if steps is not None and compiled.draftable(next_ids, cache):
            out = steps.draft(e, hidden, cache)
        else:
            out = self.mtp(e, hidden, cache)
        if not logits:
            return None, out
        return self.logits(out[:, -1:] if last_only else out), out
