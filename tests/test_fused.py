"""Fused products (model/fused.py): the joined projections against the modules they join."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_qwen3next import load_model
from mlx_qwen3next.generation.cache_file import fingerprint
from mlx_qwen3next.model.fused import Fused, checkpoint_shapes, fuse
from test_compiled_decode import rel_err

TOL = 1e-5  # float32: a joined product sums the same terms, maybe blocked differently


def prompt(n=12, seed=0):
    return mx.array(np.random.default_rng(seed).integers(0, 500, (1, n)))


def generate(model, ids, steps=4, verify=False):
    """Logits of a prefill, `steps` one-token decode steps, and (`verify`) a 3-token
    verify call and a rewind to its first token, through the compiled steps."""
    cache = model.make_cache()
    out = [model(ids, cache)]
    for _ in range(steps):
        out.append(model(mx.argmax(out[-1][:, -1:], -1), cache))
    if verify:
        cache.keep_steps(True)
        out.append(model(mx.array([[3, 7, 11]]), cache))
        cache.keep_steps(False)
        cache.rewind(2)
        out.append(model(mx.array([[5]]), cache))
    mx.eval(out)
    return out


@pytest.fixture
def plain(tiny_checkpoint):
    return load_model(tiny_checkpoint, specialise=False)


def fused_copy(tiny_checkpoint, quantize=None):
    m = load_model(tiny_checkpoint, specialise=False)
    if quantize:
        quantize(m)
    return fuse(m)


def fusions(model) -> dict:
    return {path: m for path, m in model.named_modules() if isinstance(m, Fused)}


def test_every_group_is_joined_and_the_checkpoint_names_are_kept(plain, tiny_checkpoint):
    fused = fused_copy(tiny_checkpoint)
    owners = {p.rsplit(".", 1)[0] for p in fusions(fused)}
    layer0 = "model.layers.0"
    for owner in (f"{layer0}.linear_attn", f"{layer0}.mlp", f"{layer0}.mlp.switch_mlp",
                  f"{layer0}.mlp.shared_expert", "model.layers.3.self_attn",
                  "mtp.layers.0.self_attn"):
        assert owner in owners
    names = {k for k, _ in tree_flatten(fused.parameters())}
    assert f"{layer0}.linear_attn.in_proj_qkvz.weight" not in names
    assert checkpoint_shapes(fused) == checkpoint_shapes(plain)
    assert checkpoint_shapes(plain) == sorted(
        (k, list(v.shape)) for k, v in tree_flatten(plain.parameters()))
    assert fingerprint(fused) == fingerprint(plain)


def test_fused_model_equals_the_plain_one_through_decode_and_verify(plain, tiny_checkpoint):
    fused = fused_copy(tiny_checkpoint)
    ids = prompt()
    for step, (a, b) in enumerate(zip(generate(plain, ids, verify=True),
                                      generate(fused, ids, verify=True))):
        assert rel_err(b, a) <= TOL, f"call {step}: {rel_err(b, a)}"


def test_the_deltanet_rows_are_reordered_by_kind(plain, tiny_checkpoint):
    """The joined DeltaNet product gives [q | k | v], z, b, a for every head at once,
    which is what the plain modules' outputs become after by_kind."""
    fused = fused_copy(tiny_checkpoint)
    a, b = plain.layers[0].linear_attn, fused.layers[0].linear_attn
    assert a.nk > 1  # more than one key-head group, or the order is trivial
    x = mx.random.normal((1, 5, plain.config.hidden_size), key=mx.random.key(1))
    for part_a, part_b in zip(a.project(x), b.project(x)):
        assert part_a.shape == part_b.shape
        assert rel_err(part_b, part_a) <= TOL


def test_quantized_modules_join_only_when_their_quantization_matches(plain, tiny_checkpoint):
    """As the converter's recipes quantize: the router and the shared-expert gate at 8
    bits, the rest at 4; q_proj at 8 bits too, so attention's q, k, v stay apart."""
    def recipe(m):
        def bits(path, module):
            if not hasattr(module, "to_quantized") or module.weight.shape[-1] % 32:
                return False
            eight = path.endswith((".mlp.gate", "shared_expert_gate", "self_attn.q_proj"))
            return {"group_size": 32, "bits": 8 if eight else 4}
        nn.quantize(m, class_predicate=bits)

    recipe(plain)
    fused = fused_copy(tiny_checkpoint, recipe)
    joined = fusions(fused)
    assert "model.layers.0.mlp.fused" in joined  # router + shared gate, both 8 bits
    assert joined["model.layers.0.mlp.fused"].proj.bits == 8
    assert joined["model.layers.0.mlp.switch_mlp.fused"].proj.bits == 4
    assert "model.layers.3.self_attn.fused" not in joined
    assert "q_proj" in fused.layers[3].self_attn
    ids = prompt()
    for step, (a, b) in enumerate(zip(generate(plain, ids), generate(fused, ids))):
        assert rel_err(b, a) <= TOL, f"call {step}: {rel_err(b, a)}"


def test_load_fuses_except_lazily_or_unspecialised(tiny_checkpoint):
    assert fusions(load_model(tiny_checkpoint))
    assert not fusions(load_model(tiny_checkpoint, lazy=True))
    assert not fusions(load_model(tiny_checkpoint, specialise=False))


def test_specialised_cpu_model_with_fused_experts_matches_the_plain_one(plain, tiny_checkpoint):
    """load_model on the CPU: fused, then the CPU modules (the grouped experts for a
    prompt of many (token, expert) pairs, the streamed ones for a decode step)."""
    if mx.default_device() != mx.cpu:
        pytest.skip("the CPU modules are swapped in on the CPU only")
    ids = prompt(80, seed=2)  # 80 tokens x top-k: the grouped experts' path
    for step, (a, b) in enumerate(zip(generate(plain, ids),
                                      generate(load_model(tiny_checkpoint), ids))):
        assert rel_err(b, a) <= 1e-4, f"call {step}: {rel_err(b, a)}"


def test_biases_join_with_their_weights():
    """attention_bias: q, k and v carry biases, which join along their only axis."""
    from mlx_qwen3next.config import ModelConfig
    from mlx_qwen3next.model.model import Model
    from mlx_qwen3next.testing.tiny import tiny_config

    cfg = ModelConfig.from_dict(tiny_config(attention_bias=True))
    plain = Model(cfg, mtp=False)
    joined = Model(cfg, mtp=False)
    joined.load_weights(tree_flatten(plain.parameters()))
    fuse(joined)
    attn = joined.layers[3].self_attn
    assert "q_proj" not in attn and attn.fused.proj.bias.shape == (
        plain.layers[3].self_attn.q_proj.bias.size + 2 * plain.layers[3].self_attn.k_proj.bias.size,)
    ids = prompt()
    assert rel_err(joined(ids), plain(ids)) <= TOL
    assert checkpoint_shapes(joined) == checkpoint_shapes(plain)
