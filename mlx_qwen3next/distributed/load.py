"""Loading one rank's part of a checkpoint: only its own tensors are ever read.

Every rank opens the checkpoint lazily (names and shapes, no data), agrees on the
split with the others, builds the model with its stage alone and reads the
tensors its stage owns; `check_weights` then proves none of them is missing.
"""

from __future__ import annotations

import os
from typing import Optional

import mlx.core as mx
from mlx.utils import tree_flatten

from ..checkpoints.device import specialise
from ..checkpoints.loading import (
    check_dtype, check_weights, find, lazy_weights, quantize_like, read_config,
)
from ..checkpoints.memory import available_memory
from ..checkpoints.tokenizer import load_tokenizer
from .group import Link
from .pipeline import PipelineModel
from .split import parse_split, ranges
from .stage import LAST_ENDS, Stage


def load_stage(path, link: Link, split: Optional[str] = None, dtype: Optional[str] = None,
               mtp: bool = True) -> PipelineModel:
    """This rank's PipelineModel; `split` as --split takes it (None: by memory)."""
    check_dtype(dtype)
    counts = parse_split(split)
    path = find(path)
    cfg = read_config(path)
    weights = lazy_weights(path, cfg, dtype, mtp)
    stage = Stage(link.rank, link.size, plan(link, counts, cfg, weights)[link.rank])
    tied = cfg.tie_word_embeddings
    mine = {k: v for k, v in weights.items() if stage.owns(k, tied)}
    model = PipelineModel(cfg, any(k.startswith("mtp.") for k in weights), stage, link,
                          activation_dtype(weights))
    if cfg.quantization:
        quantize_like(model, cfg.quantization, mine)
    check_weights(model, mine, path)
    model.load_weights(list(mine.items()), strict=False)
    del weights, mine  # the model holds them now; joining products frees each part as it goes
    model.eval()
    mx.eval(model.parameters())
    model.agree_on_dtypes()
    return specialise(model)


def load_pipelined(path, link: Link, split=None, dtype=None, mtp: bool = True):
    """(model, tokenizer), as `mlx_qwen3next.load` gives them, for this rank."""
    path = find(path)
    model = load_stage(path, link, split, dtype, mtp)
    return model, load_tokenizer(path, model.config)


def plan(link: Link, counts, cfg, weights: dict) -> list[range]:
    """Every rank's layer range; by memory, each rank's available memory is gathered."""
    per_layer = [0] * cfg.num_hidden_layers
    first = last = 0
    for k, w in weights.items():
        if k.startswith("model.layers."):
            per_layer[int(k.split(".")[2])] += w.nbytes
        elif k.startswith("model.embed_tokens."):
            first += w.nbytes
        elif k.startswith(LAST_ENDS):
            last += w.nbytes
    memory = [m for m, in link.gather([available_memory() >> 20])] if counts is None else []
    return ranges(counts, cfg.num_hidden_layers, link.size, per_layer, first, last, memory)


def activation_dtype(weights: dict):
    """The dtype embeddings come out in (a quantized table's scales' dtype)."""
    table = weights.get("model.embed_tokens.scales", weights.get("model.embed_tokens.weight"))
    return table.dtype


def report(model: PipelineModel) -> dict:
    """This rank's part: layers, pid, bytes of weights held, MLX memory in use."""
    r = model.stage.layers
    held = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    return {"rank": model.stage.rank, "pid": os.getpid(), "layers": [r.start, r.stop],
            "weight_bytes": held, "active_memory": mx.get_active_memory(),
            "peak_memory": mx.get_peak_memory()}


def gather_reports(model: PipelineModel) -> list[dict]:
    """Every rank's `report`, on every rank."""
    mine = report(model)
    fields = ("rank", "pid", "weight_bytes", "active_memory", "peak_memory")
    # int32 pieces: bytes in KiB keep large models in range
    row = [mine["rank"], mine["pid"], mine["layers"][0], mine["layers"][1]] + [
        mine[f] >> 10 for f in fields[2:]]
    out = []
    for got in model.link.gather(row):
        rec = {"rank": got[0], "pid": got[1], "layers": [got[2], got[3]]}
        rec.update({f: v << 10 for f, v in zip(fields[2:], got[4:])})
        out.append(rec)
    return out
