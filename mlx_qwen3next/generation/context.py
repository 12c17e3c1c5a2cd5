"""Context length: the limit a config allows, and switching YaRN on at run time.

The model was trained to 262,144 positions; YaRN with factor 4 (from config.json's
`rope_scaling`, or set here) stretches RoPE to about 1M. Only the 12 attention
layers use positions; the DeltaNet layers have no notion of length.
"""

from __future__ import annotations

from typing import Optional

from ..model.attention import Attention
from ..model.rope import PartialRoPE

YARN_1M = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 262144}


def _kind(scaling: Optional[dict]) -> str:
    scaling = scaling or {}
    return scaling.get("rope_type", scaling.get("type", "default")) or "default"


def context_limit(config) -> int:
    """Positions the model can attend over: max_position_embeddings, or
    original * factor with YaRN, whichever is larger."""
    limit = int(config.max_position_embeddings)
    scaling = config.rope_scaling
    if _kind(scaling) == "yarn":
        original = scaling.get("original_max_position_embeddings") or limit
        limit = max(limit, int(original * float(scaling["factor"])))
    return limit


def set_rope_scaling(model, scaling: Optional[dict] = YARN_1M) -> int:
    """Rebuild every attention layer's RoPE with `scaling` (None: plain RoPE).

    Returns the new context limit. Use it on a fresh cache: keys already in a
    cache were rotated with the old frequencies.
    """
    if scaling is not None and _kind(scaling) != "yarn":
        raise ValueError(f"unsupported rope_scaling type {_kind(scaling)!r} (supported: yarn)")
    if scaling is not None and not float(scaling.get("factor", 0)) > 1:
        raise ValueError(f"rope_scaling factor must be > 1, got {scaling.get('factor')!r}")
    cfg = model.config
    scaling = dict(scaling) if scaling is not None else None
    if scaling is not None:
        scaling.setdefault("original_max_position_embeddings", cfg.max_position_embeddings)
    cfg.rope_scaling = scaling
    for _, module in model.named_modules():
        if isinstance(module, Attention):
            module.rope = PartialRoPE(
                cfg.rotary_dim, cfg.rope_theta, scaling, cfg.max_position_embeddings
            )
    model.reset_compiled()  # the compiled steps hold the old frequencies
    return context_limit(cfg)
