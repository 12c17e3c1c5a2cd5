"""Tiny random weights whose MTP head drafts well (speculative-decoding tests)."""

from __future__ import annotations

import numpy as np

from .tiny import random_weights, tiny_config


def drafting_weights(main_scale: float, seed: int = 0) -> dict:
    """Random weights where the MTP head drafts the main model's greedy token.

    Every main-layer branch is scaled by `main_scale`: at 0 the main model's next
    token depends only on the current token, hidden = norm(embed(token)); the MTP
    head is built to compute exactly that for the token it is given, so its draft
    is the main model's prediction. Above 0 the context matters and drafts miss
    sometimes, which exercises partial acceptance.
    """
    cfg = tiny_config()
    w = random_weights(cfg, seed=seed)
    H = cfg["hidden_size"]
    for name in w:
        if name.startswith("model.layers.") and name.endswith(
            ("o_proj.weight", "out_proj.weight", "down_proj.weight")
        ):
            w[name] = w[name] * main_scale
        if name.startswith("mtp.layers.0.") and name.endswith(("o_proj.weight", "down_proj.weight")):
            w[name] = np.zeros_like(w[name])
    w["mtp.fc.weight"] = np.concatenate([np.eye(H), np.zeros((H, H))], axis=1).astype(np.float32)
    w["mtp.pre_fc_norm_embedding.weight"] = np.zeros(H, np.float32)
    w["mtp.norm.weight"] = w["model.norm.weight"].copy()
    return w
