"""The CPU's causal attention in query blocks (cpu/attention.py) against the plain
Attention module it stands in for: same weights, same outputs, with and without
cached keys before the new tokens."""

import mlx.core as mx
import pytest

from mlx_qwen3next.cache import KVCache
from mlx_qwen3next.config import ModelConfig
from mlx_qwen3next.cpu.attention import BLOCK, BlockedCausalAttention
from mlx_qwen3next.cpu.specialise import swapped
from mlx_qwen3next.model.attention import Attention
from mlx_qwen3next.testing.tiny import tiny_config

pytestmark = pytest.mark.cpu_only


def attention_pair():
    mx.random.seed(0)
    plain = Attention(ModelConfig.from_dict(tiny_config()))
    blocked = swapped(plain)
    assert type(blocked) is BlockedCausalAttention and blocked.q_proj is plain.q_proj
    return plain, blocked


def run(attn, chunks, hidden):
    """The attention over the chunks of one sequence in turn, on a KV cache."""
    cache, outs, offset = KVCache(), [], 0
    for n in chunks:
        x = hidden[:, offset:offset + n]
        outs.append(attn(x, "causal" if n > 1 else None, cache, positions=offset))
        offset += n
    return mx.concatenate(outs, axis=1)


@pytest.mark.parametrize("chunks", [[2 * BLOCK + 88], [100, 2 * BLOCK + 1, 1], [BLOCK]])
def test_blocked_causal_attention_equals_the_plain_one(chunks):
    plain, blocked = attention_pair()
    hidden = mx.random.normal((2, sum(chunks), plain.q_proj.weight.shape[1]))
    want, got = run(plain, chunks, hidden), run(blocked, chunks, hidden)
    assert mx.allclose(got, want, atol=1e-5, rtol=1e-4).item()


def test_a_mask_array_is_passed_through():
    plain, blocked = attention_pair()
    L = BLOCK + 10
    q, k, v = (mx.random.normal((1, 4, L, 8)) for _ in range(3))
    mask = mx.random.uniform(shape=(L, L)) > 0.3
    mask = mask | mx.eye(L, dtype=mx.bool_)
    assert mx.allclose(blocked.attend(q, k, v, mask), plain.attend(q, k, v, mask)).item()
