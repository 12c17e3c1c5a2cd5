"""Numbers behind `qwen3next info`: parameters (total and active per token) from the
config alone, weights on disk, and the memory a chat needs.

Active parameters count the routed experts at top_k / num_experts (the shared
expert, attention, DeltaNet, router, embedding and lm_head always run); the MTP
head is counted apart, since it runs only with speculative decoding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mlx_qwen3next import ModelConfig

RUNTIME_OVERHEAD = 0.10  # activations, the MoE's gathered experts, allocator slack


@dataclass
class ParamCount:
    total: int  # main model (embedding, layers, norm, lm_head)
    active: int  # per token
    experts: int  # routed experts, all of them
    embedding: int  # the input embedding (a lookup, no compute)
    mtp: int  # the multi-token-prediction head, apart


def _mlp(hidden: int, inter: int) -> int:
    return 3 * hidden * inter


def _attention(c: ModelConfig) -> int:
    H, hd = c.hidden_size, c.head_dim
    q = H * c.num_attention_heads * hd * 2  # query and output gate
    kv = 2 * H * c.num_key_value_heads * hd
    return q + kv + c.num_attention_heads * hd * H + 2 * hd


def _deltanet(c: ModelConfig) -> int:
    H = c.hidden_size
    key = c.linear_num_key_heads * c.linear_key_head_dim
    value = c.linear_num_value_heads * c.linear_value_head_dim
    in_proj = H * (2 * key + 2 * value) + H * 2 * c.linear_num_value_heads
    conv = (2 * key + value) * c.linear_conv_kernel_dim
    return in_proj + conv + 2 * c.linear_num_value_heads + c.linear_value_head_dim + value * H


def _layer(c: ModelConfig, i: int, linear: bool) -> tuple[int, int]:
    """(params, routed-expert params) of decoder layer i."""
    H = c.hidden_size
    n = 2 * H + (_deltanet(c) if linear else _attention(c))
    if not c.is_moe(i):
        return n + _mlp(H, c.intermediate_size), 0
    experts = c.num_experts * _mlp(H, c.moe_intermediate_size)
    shared = _mlp(H, c.shared_expert_intermediate_size) + H  # + shared_expert_gate
    return n + c.num_experts * H + shared + experts, experts


def count_params(c: ModelConfig) -> ParamCount:
    H, V = c.hidden_size, c.vocab_size
    total = V * H * (1 if c.tie_word_embeddings else 2) + H
    experts = 0
    for i in range(c.num_hidden_layers):
        n, e = _layer(c, i, c.is_linear(i))
        total, experts = total + n, experts + e
    mtp = 0
    if c.num_nextn_predict_layers:
        n, _ = _layer(c, 0, linear=False)
        mtp = c.num_nextn_predict_layers * (2 * H * H + 3 * H + n)
    k = c.num_experts_per_tok / c.num_experts if c.num_experts else 0
    return ParamCount(total, total - experts + round(experts * k), experts, V * H, mtp)


def weight_bytes(path: Path) -> int:
    """Bytes of the safetensors shards (the Hub cache's symlinks followed)."""
    return sum(os.stat(f).st_size for f in Path(path).glob("*.safetensors"))


def state_bytes(c: ModelConfig, context: int) -> dict:
    """Cache bytes for one sequence of `context` tokens: KV for the attention
    layers (bf16), fp32 recurrent + conv state for the DeltaNet layers."""
    attn = sum(not c.is_linear(i) for i in range(c.num_hidden_layers))
    linear = c.num_hidden_layers - attn
    kv = context * 2 * attn * c.num_key_value_heads * c.head_dim * 2
    recurrent = c.linear_num_value_heads * c.linear_key_head_dim * c.linear_value_head_dim * 4
    conv_dim = 2 * c.linear_num_key_heads * c.linear_key_head_dim + (
        c.linear_num_value_heads * c.linear_value_head_dim)
    conv = conv_dim * (c.linear_conv_kernel_dim - 1) * 4
    return {"kv": kv, "deltanet": linear * (recurrent + conv)}


def memory_need(weights: int, c: ModelConfig, context: int) -> int:
    states = state_bytes(c, context)
    return int(weights * (1 + RUNTIME_OVERHEAD)) + states["kv"] + states["deltanet"]


def machine_memory() -> tuple[int, str]:
    """(bytes a model may use here, what that figure is)."""
    try:
        from mlx_qwen3next.checkpoints.memory import available_memory

        return available_memory(), "available"
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical"
