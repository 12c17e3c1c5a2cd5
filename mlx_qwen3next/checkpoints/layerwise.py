"""Run a model bigger than memory: one decoder layer's weights resident at a time.

`convert --check` compares a 151 GB bf16 source with its conversion on
machines with far less memory. The model is built lazily (nothing read), the
prompts go through it layer by layer, and after each layer its weights are
swapped for fresh unread ones, so the memory they took is given back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import mlx.core as mx

from .loading import lazy_weights, load_model
from ..model.decoder import step_context


def layerwise_logits(path, prompts: list[list[int]], dtype: Optional[str] = None):
    """Full-sequence logits [T, vocab] for each prompt, holding one layer at a time."""
    path = Path(path)
    model = load_model(path, dtype=dtype, mtp=False, lazy=True)

    def release(prefix: str):
        fresh = lazy_weights(path, model.config, dtype, mtp=False)
        model.load_weights([(k, v) for k, v in fresh.items() if k.startswith(prefix)],
                           strict=False)

    xs = [model.model.embed_tokens(mx.array([ids])) for ids in prompts]
    mx.eval(xs)
    release("model.embed_tokens.")
    for i, layer in enumerate(model.layers):
        xs = [layer(x, None, step_context(None, x.shape[1], x.dtype)) for x in xs]
        mx.eval(xs)
        release(f"model.layers.{i}.")
    logits = [model.logits(model.model.norm(x))[0] for x in xs]
    mx.eval(logits)
    return logits
