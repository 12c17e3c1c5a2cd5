"""One rank's part of the model: its range of layers, and the ends it holds.

The first rank also holds the embedding; the last holds the final norm, the
lm_head and the MTP head (and the embedding too when lm_head is tied to it).
Layers of other ranks are `Absent`: no parameters, so nothing of theirs is read
from the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.nn as nn

from ..cache import HybridCache

LAST_ENDS = ("model.norm.", "lm_head.", "mtp.")


@dataclass(frozen=True)
class Stage:
    rank: int
    size: int
    layers: range

    @property
    def first(self) -> bool:
        return self.rank == 0

    @property
    def last(self) -> bool:
        return self.rank == self.size - 1

    def owns(self, key: str, tied: bool = False) -> bool:
        """Whether the tensor named `key` (the model's names) belongs to this rank."""
        if key.startswith("model.layers."):
            return int(key.split(".")[2]) in self.layers
        if key.startswith("model.embed_tokens."):
            return self.first or (tied and self.last)
        if key.startswith(LAST_ENDS):
            return self.last
        return True

    def describe(self) -> str:
        r = self.layers
        return f"rank {self.rank}: layers {r.start}-{r.stop - 1}"


class Absent(nn.Module):
    """A layer another rank holds."""

    def __init__(self, is_linear: bool):
        super().__init__()
        self.is_linear = is_linear


class MTPElsewhere(nn.Module):
    """The MTP head on another rank: this one keeps its (empty) cache in step."""

    def make_cache(self) -> HybridCache:
        return HybridCache(["full_attention"])


def prune(model, stage: Stage):
    """Drop (in place) what `stage` does not hold from a freshly built Model."""
    inner, tied = model.model, model.config.tie_word_embeddings
    for i, layer in enumerate(inner.layers):
        if i not in stage.layers:
            inner.layers[i] = Absent(layer.is_linear)
    if not stage.owns("model.embed_tokens.weight", tied):
        del inner["embed_tokens"]
    if not stage.last:
        del inner["norm"]
        if "lm_head" in model:
            del model["lm_head"]
        if "mtp" in model:
            model["mtp"] = MTPElsewhere()
    return model
