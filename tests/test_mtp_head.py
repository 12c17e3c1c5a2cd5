"""The MTP head's forward against the published formula, recomputed in float64 with torch."""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch

import mlx.core as mx
from mlx_qwen3next import load_model

from conftest import hf_model
from test_model import random_ids, rel_err


def zc_norm(x, w, eps=1e-6):
    """Zero-centred RMSNorm as the checkpoint defines it: x_normed * (1 + w)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (1.0 + w)


def mtp_as_one_layer_model(src, dst):
    """A 1-layer Qwen3-Next checkpoint whose layer, final norm and heads are the MTP head's.

    transformers has no MTP module, but its full-attention + MoE decoder layer is
    exactly the MTP layer, so its 1-layer model computes norm(layer(x)) for us.
    """
    import mlx.core as mx

    dst.mkdir()
    weights = {}
    for f in src.glob("*.safetensors"):
        weights.update(mx.load(str(f)))
    out = {"model.embed_tokens.weight": weights["model.embed_tokens.weight"],
           "lm_head.weight": weights["lm_head.weight"],
           "model.norm.weight": weights["mtp.norm.weight"]}
    for k, v in weights.items():
        if k.startswith("mtp.layers.0."):
            out["model.layers.0." + k[len("mtp.layers.0."):]] = v
    mx.save_safetensors(str(dst / "model.safetensors"), out, metadata={"format": "pt"})
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(num_hidden_layers=1, layer_types=["full_attention"])
    (dst / "config.json").write_text(json.dumps(cfg))
    return weights


def test_mtp_forward_matches_formula(tiny_checkpoint, tmp_path):
    weights = mtp_as_one_layer_model(tiny_checkpoint, tmp_path / "mtp1")
    w = {k: torch.tensor(np.array(v.astype(mx.float32)), dtype=torch.float64)
         for k, v in weights.items() if k.startswith(("mtp.", "model.embed"))}
    ids = random_ids((1, 20), seed=7)

    with torch.no_grad():
        hidden = hf_model(tiny_checkpoint).model(torch.tensor(ids)).last_hidden_state
        e = zc_norm(w["model.embed_tokens.weight"][torch.tensor(ids[:, 1:])],
                    w["mtp.pre_fc_norm_embedding.weight"])
        h = zc_norm(hidden[:, :-1], w["mtp.pre_fc_norm_hidden.weight"])
        x = torch.cat([e, h], dim=-1) @ w["mtp.fc.weight"].T
        layer = hf_model(tmp_path / "mtp1")
        ref_out = layer.model(inputs_embeds=x).last_hidden_state
        ref_logits = layer.lm_head(ref_out)

    model = load_model(tiny_checkpoint)
    assert model.has_mtp
    ours_hidden = model.hidden(mx.array(ids))
    assert rel_err(ours_hidden, hidden.numpy()) <= 1e-4
    logits, out = model.mtp_forward(ours_hidden[:, :-1], mx.array(ids[:, 1:]))
    assert rel_err(out, ref_out.numpy()) <= 1e-4
    assert rel_err(logits, ref_logits.numpy()) <= 1e-4
    last, last_out = model.mtp_forward(ours_hidden[:, :-1], mx.array(ids[:, 1:]), last_only=True)
    assert last.shape == (1, 1, logits.shape[-1])
    assert rel_err(last, ref_logits.numpy()[:, -1:]) <= 1e-4
    assert rel_err(last_out, ref_out.numpy()) <= 1e-4

    # step by step through the MTP head's own KV cache gives the same drafts
    cache = model.mtp.make_cache()
    steps = [model.mtp_forward(ours_hidden[:, t : t + 1], mx.array(ids[:, t + 1 : t + 2]),
                               cache)[0] for t in range(19)]
    assert rel_err(mx.concatenate(steps, axis=1), ref_logits.numpy()) <= 1e-4
