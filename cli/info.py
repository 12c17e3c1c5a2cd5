"""`qwen3next info MODEL`: what a model is and whether it fits here."""

from __future__ import annotations

import json

import typer
from rich.table import Table
from rich.text import Text

from mlx_qwen3next import ModelConfig
from mlx_qwen3next.checkpoints import hub

from .console import count, out, size
from .sizing import RUNTIME_OVERHEAD, count_params, machine_memory, memory_need, state_bytes, weight_bytes


def info(
    model: str = typer.Argument(..., help="Model folder, name in the models folder, or Hub repo id."),
    context: int = typer.Option(32768, "--context", min=1, help="Context length for the memory estimate."),
):
    """Show a model's config, parameters, quantization, size and memory need.

    Parameters are counted from the config (active = routed experts at top-k of
    all, plus everything that always runs); the memory estimate is weights plus
    working memory plus the cache for --context tokens, against this machine.
    """
    path = hub.resolve(model)
    cfg = ModelConfig.from_file(path)
    raw = json.loads((path / "config.json").read_text())
    params = count_params(cfg)
    weights = weight_bytes(path)
    if not weights:
        raise ValueError(f"{path}: no *.safetensors weights")
    states = state_bytes(cfg, context)
    need = memory_need(weights, cfg, context)
    have, what = machine_memory()
    attn = sum(not cfg.is_linear(i) for i in range(cfg.num_hidden_layers))
    rows = [
        ("model", str(path)),
        ("layers", f"{cfg.num_hidden_layers} ({cfg.num_hidden_layers - attn} Gated DeltaNet + "
                   f"{attn} gated attention), hidden {cfg.hidden_size}, vocab {cfg.vocab_size}"),
        ("attention", f"{cfg.num_attention_heads} q / {cfg.num_key_value_heads} kv heads of "
                      f"{cfg.head_dim}, rotary on {cfg.rotary_dim} dims, theta {cfg.rope_theta:g}"),
        ("deltanet", f"{cfg.linear_num_key_heads} key / {cfg.linear_num_value_heads} value heads "
                     f"of {cfg.linear_key_head_dim}/{cfg.linear_value_head_dim}, "
                     f"conv {cfg.linear_conv_kernel_dim}"),
        ("experts", f"{cfg.num_experts} routed (top {cfg.num_experts_per_tok}) of "
                    f"{cfg.moe_intermediate_size} + 1 shared of {cfg.shared_expert_intermediate_size}"),
        ("context", f"{cfg.max_position_embeddings:,} tokens"
                    + (f", rope scaling {cfg.rope_scaling}" if cfg.rope_scaling else "")),
        ("parameters", f"{count(params.total)} total, {count(params.active)} active per token "
                       f"({count(params.active - params.embedding)} without the embedding)"),
        ("MTP head", f"{count(params.mtp)} parameters" if params.mtp else "none"),
        ("weights", f"{hub.describe_quantization(raw)}, "
                    f"{8 * weights / (params.total + params.mtp):.2f} bits per parameter"),
        ("on disk", f"{size(hub.dir_size(path))} ({size(weights)} of weights)"),
        ("memory", f"about {size(need)} for a {context:,}-token chat: weights + "
                   f"{RUNTIME_OVERHEAD:.0%} working memory + {size(states['kv'])} KV cache + "
                   f"{size(states['deltanet'])} DeltaNet state"),
        ("this machine", f"{size(have)} {what}: " + (
            "fits" if need <= have else f"does NOT fit (short by {size(need - have)})")),
    ]
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(Text(key), Text(value))
    out.print(table)
