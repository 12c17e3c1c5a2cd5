"""The model split by layers across ranks (pipeline parallelism over mx.distributed).

Rank r runs its layers on the hidden states rank r - 1 sends (rank 0 embeds the
tokens) and sends the result to rank r + 1. Every rank runs the same generation
loop with its own hybrid cache, whose entries for other ranks' layers stay empty;
what the loop reads back comes out the same on every rank:
- `hidden` returns the final hidden states on the last rank and zeros elsewhere,
  which only ever flow back into `logits` or `mtp_forward` here;
- `logits` are the last rank's, summed with the others' zeros (all_sum), so each
  rank samples the same token from the same numbers with the same seed;
- `mtp_forward`: rank 0 sends the next tokens' embeddings to the last rank, which
  runs the MTP head; its logits are shared the same way.
Caches advance (and rewind) alike on every rank, since the loop's calls do.
"""

from __future__ import annotations

from typing import Optional

import mlx.core as mx

from ..cache import HybridCache
from ..config import ModelConfig
from ..model import Model
from .group import Link
from .stage import Stage, prune


class PipelineModel(Model):
    def __init__(self, cfg: ModelConfig, mtp: bool, stage: Stage, link: Link, act_dtype):
        super().__init__(cfg, mtp=mtp)
        prune(self, stage)
        self.stage, self.link = stage, link
        self.act_dtype = act_dtype  # the residual stream's dtype, as every rank knows it
        self.logits_dtype = act_dtype  # set by agree_on_dtypes once loaded

    def agree_on_dtypes(self):
        """The last rank tells the others the dtype of its logits (lazily, nothing runs)."""
        code = 0
        if self.stage.last:
            probe = Model.logits(self, mx.zeros((1, 1, self.config.hidden_size),
                                                self.act_dtype))
            code = DTYPES.index(probe.dtype) + 1
        self.logits_dtype = DTYPES[self.link.share(mx.array(code, mx.int32)).item() - 1]

    def _shape(self, ids: mx.array) -> tuple:
        return (*ids.shape[:2], self.config.hidden_size)

    def hidden(self, input_ids: mx.array, cache: Optional[HybridCache] = None) -> mx.array:
        st = self.stage
        if st.first:
            x = self.model.embed_tokens(input_ids)
        else:
            x = self.link.recv(self._shape(input_ids), self.act_dtype, st.rank - 1)
        steps = self.compiled_steps() if cache is not None else None
        x = self.model.run(x, input_ids, cache, steps, st.layers)
        if cache is not None:
            cache.advance(input_ids.shape[1])
        if not st.last:
            self.link.send(x, st.rank + 1)
            return mx.zeros(x.shape, self.act_dtype)
        return self.model.norm(x)

    def logits(self, hidden: mx.array) -> mx.array:
        if self.stage.last:
            out = Model.logits(self, hidden)
        else:
            out = mx.zeros((*hidden.shape[:-1], self.config.vocab_size), self.logits_dtype)
        return self.link.share(out)

    def mtp_forward(self, hidden: mx.array, next_ids: mx.array,
                    cache: Optional[HybridCache] = None, last_only: bool = False,
                    logits: bool = True):
        st = self.stage
        if st.first:
            e = self.model.embed_tokens(next_ids)
            if not st.last:
                self.link.send(e, st.size - 1)
        if st.last:
            if not st.first:
                e = self.link.recv(self._shape(next_ids), self.act_dtype, 0)
            return self.mtp_head(e, hidden, next_ids, cache, last_only, logits)
        if cache is not None:
            cache.advance(next_ids.shape[1])
        out = mx.zeros(self._shape(next_ids), self.act_dtype)
        if not logits:  # the prefill's feed: no logits, so nothing to share
            return None, out
        return self.logits(out[:, -1:] if last_only else out), out


DTYPES = (mx.bfloat16, mx.float16, mx.float32)
