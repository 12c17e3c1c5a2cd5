"""A prompt cache on disk: a HybridCache and the token ids it holds, in one safetensors file.

The file is mlx-lm's prompt-cache format (`mlx_lm.models.cache.save_prompt_cache`): one
KVCache per attention layer and one ArraysCache of [conv state, recurrent state] per
DeltaNet layer, the layouts mlx-lm's own qwen3_next uses, so mlx-lm's
`load_prompt_cache` reads our files and its model continues from them. Our metadata
rides in the file's metadata: the format and version, the token ids, the model's
fingerprint (config and tensor shapes), the activation dtype and kv_bits.

Writes go to a temporary file that is renamed over the target. A file made for another
model, with other kv_bits, or damaged, is one ValueError naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import mlx.core as mx

from ..cache import DeltaNetCache, HybridCache
from .kv_quant import QuantizedKVCache

FORMAT = "mlx-qwen3next-prompt-cache"
VERSION = "1"


def fingerprint(model) -> str:
    """A hash of what a cache depends on: the config and every tensor's name and shape
    as the checkpoint holds them (fused products or not)."""
    from ..model.fused import checkpoint_shapes

    shapes = checkpoint_shapes(model)
    config = {k: v for k, v in asdict(model.config).items() if k != "quantization"}
    blob = json.dumps({"config": config, "shapes": shapes}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save_prompt_cache(path, cache: HybridCache, tokens, model, **extra) -> Path:
    """Write `cache` (holding `tokens`) to `path`; `extra` (JSON-able) goes in the
    metadata, for example the chat messages the tokens render."""
    from mlx_lm.models import cache as lm

    tokens = [int(t) for t in tokens]
    if len(tokens) != cache.offset:
        raise ValueError(f"the cache holds {cache.offset} tokens, not {len(tokens)}")
    layers, kv_bits = [], None
    for c in cache:
        if isinstance(c, DeltaNetCache):
            arrays = lm.ArraysCache(2)
            arrays.cache = list(c.state())
            layers.append(arrays)
        elif isinstance(c, QuantizedKVCache):
            kv_bits = c.bits
            q = lm.QuantizedKVCache(group_size=c.group_size, bits=c.bits)
            state = c.state()
            q.keys, q.values, q.offset = tuple(state[:3]), tuple(state[3:]), c.offset
            layers.append(q)
        else:
            kv = lm.KVCache()
            kv.keys, kv.values = c.state() if c.offset else (None, None)
            kv.offset = c.offset
            layers.append(kv)
    meta = {"format": FORMAT, "version": VERSION, "tokens": json.dumps(tokens),
            "fingerprint": fingerprint(model), "dtype": str(_dtype(model)),
            "kv_bits": json.dumps(kv_bits), "extra": json.dumps(extra)}
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.safetensors")
    try:
        lm.save_prompt_cache(str(tmp), layers, meta)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"{path}: cannot write the prompt cache ({e.strerror or e})") from None
    return path


def load_prompt_cache(path, model, kv_bits: Optional[int] = None):
    """(cache, tokens, extra) from a file save_prompt_cache wrote for this model."""
    from mlx_lm.models import cache as lm

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such prompt cache file")
    try:
        layers, meta = lm.load_prompt_cache(str(path), return_metadata=True)
    except Exception as e:  # mlx's and safetensors' own errors name no file
        raise ValueError(f"{path}: not a readable prompt cache ({str(e).splitlines()[0]})") \
            from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a mlx-qwen3next prompt cache")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path}: prompt cache version {meta.get('version')}, this reads "
                         f"{VERSION}")
    if meta.get("fingerprint") != fingerprint(model):
        raise ValueError(f"{path}: made for another model (its config or tensors differ)")
    saved_bits = json.loads(meta.get("kv_bits", "null"))
    if saved_bits != kv_bits:
        raise ValueError(f"{path}: saved with kv_bits {saved_bits}, asked for {kv_bits}")
    tokens = json.loads(meta["tokens"])
    cache = model.make_cache()
    if kv_bits is not None:
        from .kv_quant import quantize_kv

        quantize_kv(cache, kv_bits)
    if len(layers) != len(cache):
        raise ValueError(f"{path}: {len(layers)} layers, the model has {len(cache)}")
    for ours, theirs in zip(cache, layers):
        _fill(ours, theirs, len(tokens), path)
    cache.offset = len(tokens)
    return cache, tokens, json.loads(meta.get("extra", "{}"))


def _fill(ours, theirs, n: int, path: Path):
    """Our layer cache from mlx-lm's, checked against the file's token count."""
    if isinstance(ours, DeltaNetCache):
        ours.set_state(tuple(theirs.cache))
        return
    if isinstance(ours, QuantizedKVCache):
        state = tuple(theirs.keys) + tuple(theirs.values)
    else:
        state = None if theirs.keys is None else (theirs.keys, theirs.values)
    if state is not None:
        state = tuple(a[..., :theirs.offset, :] for a in state)
    if theirs.offset != n or (state is None) != (n == 0):
        raise ValueError(f"{path}: a layer holds {theirs.offset} positions, the file "
                         f"names {n} tokens")
    ours.set_state(state)


def _dtype(model):
    return model.model.embed_tokens.weight.dtype if hasattr(
        model.model.embed_tokens, "weight") else mx.float32
