"""Write the trained in-memory model as a checkpoint in the original Hub layout.

The inverse of the loader's Hub-to-model mapping (mlx_qwen3next/loading.py
from_original): stacked experts `switch_mlp.P.weight [E, out, in]` become one
tensor per expert `experts.e.P.weight`, the depthwise conv weight goes back from
MLX's [C, K, 1] to [C, 1, K], and the zero-centred norms, which the in-memory
model holds as 1 + w, are stored as w. The shards, their index and config.json
are written by mlx_qwen3next.testing.tiny.write_checkpoint (bf16), the tokenizer
files by training/tokenizer.py; generation_config.json
(greedy) beside them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

import mlx_qwen3next.model  # noqa: F401  (loads OpenBLAS before mlx.core)
import mlx.core as mx
from mlx.utils import tree_flatten

from mlx_qwen3next.testing.tiny import write_checkpoint

from mlx_qwen3next.testing.tokenizer_files import save_tokenizer

_SWITCH = re.compile(r"^(.*\.mlp)\.switch_mlp\.(gate_proj|up_proj|down_proj)\.weight$")
# The checkpoint's zero-centred norms (applied as 1 + w), as DESIGN.md lists them.
_ZERO_CENTRED = ("input_layernorm.weight", "post_attention_layernorm.weight",
                 "model.norm.weight", "q_norm.weight", "k_norm.weight",
                 "pre_fc_norm_embedding.weight", "pre_fc_norm_hidden.weight",
                 "mtp.norm.weight")


def hub_weights(model) -> dict[str, np.ndarray]:
    """The model's parameters under the Hub names and conventions, float32 numpy."""
    out = {}
    for name, w in tree_flatten(model.parameters()):
        w = np.array(w.astype(mx.float32))
        m = _SWITCH.match(name)
        if m:
            for e in range(w.shape[0]):
                out[f"{m[1]}.experts.{e}.{m[2]}.weight"] = w[e]
            continue
        if name.endswith("conv1d.weight"):
            w = np.moveaxis(w, 2, 1)  # [C, K, 1] -> [C, 1, K]
        elif name.endswith(_ZERO_CENTRED) and w.ndim == 1:
            w = w - 1.0
        out[name] = w
    return out


def export(model, hub_config: dict, tok, path: str | Path, num_shards: int = 1) -> Path:
    """Write weights (bf16), config.json, tokenizer files and generation_config.json."""
    path = Path(path)
    special = save_tokenizer(tok, path)
    cfg = dict(hub_config, bos_token_id=special["<|endoftext|>"],
               eos_token_id=special["<|im_end|>"])
    write_checkpoint(path, cfg, weights=hub_weights(model), dtype="bfloat16",
                     num_shards=num_shards, mtp=model.has_mtp, tokenizer=False)
    gen = {
        "bos_token_id": special["<|endoftext|>"],
        "eos_token_id": [special["<|im_end|>"], special["<|endoftext|>"]],
        "pad_token_id": special["<|endoftext|>"],
        "do_sample": False,  # greedy: what the held-out accuracy is measured with
    }
    (path / "generation_config.json").write_text(json.dumps(gen, indent=2))
    return path


def stored_rounding(model):
    """The in-memory parameters as they come back from the bf16 checkpoint: rounded to
    bf16, the zero-centred norms rounded as stored (w - 1), not as held (1 + w)."""
    def rounded(name, w):
        if name.endswith(_ZERO_CENTRED) and w.ndim == 1:
            return (w - 1.0).astype(mx.bfloat16).astype(mx.float32) + 1.0
        return w.astype(mx.bfloat16).astype(mx.float32)

    return [(k, rounded(k, w)) for k, w in tree_flatten(model.parameters())]


def check_reload(model, path: str | Path, ids: mx.array, valid: mx.array) -> dict:
    """Load the checkpoint back with mlx_qwen3next.load_model and compare logits on the
    real (`valid`) tokens of the right-padded rows `ids`, main and MTP heads.

    The checkpoint loaded in float32 with the plain modules against the in-memory model
    with its weights rounded as stored (the layout mapping is exact, so this should
    agree to float32 rounding), and the checkpoint as a user loads it (bf16, fitted to
    the device) against the float32 in-memory model (bf16 rounding)."""
    from mlx.utils import tree_unflatten

    from mlx_qwen3next import load_model

    def heads(m):
        h = m.hidden(ids)
        logits, draft = m.logits(h), m.mtp_forward(h[:, :-1], ids[:, 1:])[0]
        mx.eval(logits, draft)
        return logits.astype(mx.float32), draft.astype(mx.float32)

    ref = heads(model)
    saved = list(tree_flatten(model.parameters()))
    model.update(tree_unflatten(stored_rounding(model)))
    rounded = heads(model)
    model.update(tree_unflatten(saved))
    exact = heads(load_model(path, dtype="float32", specialise=False))
    user = heads(load_model(path))
    masks = (valid[..., None], valid[:, 2:, None])  # MTP rows t draft token t + 2

    def diff(a, b):
        return max(float((mx.abs(x[:, :m.shape[1]] - y[:, :m.shape[1]]) * m).max())
                   for x, y, m in zip(a, b, masks))

    def agree(a, b, i):
        m = masks[i][..., 0]
        x, y = a[i][:, :m.shape[1]], b[i][:, :m.shape[1]]
        same = (mx.argmax(x, -1) == mx.argmax(y, -1)) & m
        return float(same.sum() / m.sum())

    return {
        "float32_load_vs_rounded_in_memory": {"max_abs_diff": diff(exact, rounded)},
        "bf16_load_vs_float32_in_memory": {
            "max_abs_diff": diff(user, ref),
            "logit_scale": float((mx.abs(ref[0]) * masks[0]).max()),
            "argmax_agreement": agree(user, ref, 0),
            "mtp_argmax_agreement": agree(user, ref, 1)},
    }


def disk_size(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
