"""Recipes: bits per tensor, the size estimate (exact), fit-to-memory, sizes."""

import glob

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx)
import mlx.core as mx
import pytest

from mlx_qwen3next.quantize import ConvertError, convert, make_plan, make_recipe, parse_size
from mlx_qwen3next.quantize.recipe import sensitive_layers
from mlx_qwen3next.testing.tiny import tiny_config, write_checkpoint

CFG = tiny_config(num_hidden_layers=8, moe_intermediate_size=64, shared_expert_intermediate_size=64)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("src") / "tiny8", CFG, dtype="float32")


def same_logits_in_both_loaders(directory):
    """mlx-lm rebuilds the per-module overrides exactly as we do."""
    from mlx_lm.utils import load_model as mlx_lm_load_model

    ids = mx.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    ours = mlx_qwen3next.load_model(directory, mtp=False)(ids)
    theirs = mlx_lm_load_model(directory)[0](ids)
    assert (mx.abs(ours - theirs).max() / mx.abs(theirs).max()).item() <= 1e-4


def bits_on_disk(directory) -> dict[str, int]:
    """module -> bits, read back from the packed weights and their scales."""
    w = {}
    for f in glob.glob(str(directory / "*.safetensors")):
        w.update(mx.load(f))
    out = {}
    for name, scales in w.items():
        if name.endswith(".scales"):
            module = name[: -len(".scales")]
            packed = w[f"{module}.weight"]
            in_dim = scales.shape[-1] * 64
            out[module] = packed.shape[-1] * 32 // in_dim
    return out


def test_default_recipe_roles():
    r = make_recipe("4bit", 48)
    assert r.spec("model.layers.7.mlp.switch_mlp.down_proj").bits == 4
    assert r.spec("model.layers.7.mlp.gate").bits == 8
    assert r.spec("model.layers.7.mlp.shared_expert_gate").bits == 8
    assert r.spec("model.layers.7.mlp.shared_expert.up_proj").bits == 4
    assert r.spec("model.embed_tokens").bits == r.spec("lm_head").bits == 4
    assert make_recipe("4bit", 48, bits=2).spec("model.layers.0.mlp.gate").bits == 8
    assert make_recipe("8bit", 48).spec("model.layers.0.linear_attn.in_proj_qkvz").bits == 8


def test_norms_and_small_tensors_stay_float(src):
    plan = make_plan(src)
    floats = {t.name for t in plan.tensors if t.quant is None}
    for suffix in ("input_layernorm.weight", "A_log", "dt_bias", "conv1d.weight", "linear_attn.norm.weight"):
        assert any(n.endswith(suffix) for n in floats), suffix
    assert not any(n.endswith("proj.weight") for n in floats)


def test_estimate_is_the_written_size(src, tmp_path):
    for recipe in ("4bit", "8bit", "mixed-3-4"):
        plan = make_plan(src, recipe)
        result = convert(src, tmp_path / recipe, recipe=recipe, progress=False)
        assert result.size_bytes == plan.size_bytes
        on_disk = sum(f.stat().st_size for f in (tmp_path / recipe).glob("*.safetensors"))
        assert 0 < on_disk - plan.size_bytes < 150 * len(plan.entries)  # headers only
    sizes = [make_plan(src, r).size_bytes for r in ("mixed-3-4", "4bit", "8bit")]
    assert sizes == sorted(sizes)


def test_mixed_3_4_on_disk(src, tmp_path):
    convert(src, tmp_path / "m", recipe="mixed-3-4", progress=False)
    bits = bits_on_disk(tmp_path / "m")
    keep = sensitive_layers(CFG["num_hidden_layers"])
    assert keep and keep != set(range(CFG["num_hidden_layers"]))
    for i in range(CFG["num_hidden_layers"]):
        p = f"model.layers.{i}.mlp"
        assert bits[f"{p}.switch_mlp.up_proj"] == 3
        assert bits[f"{p}.switch_mlp.down_proj"] == (4 if i in keep else 3)
        assert bits[f"{p}.gate"] == bits[f"{p}.shared_expert_gate"] == 8
    assert bits["lm_head"] == 4
    same_logits_in_both_loaders(tmp_path / "m")


def test_fit_to_memory(src, tmp_path, capsys):
    full, small = make_plan(src).size_bytes, make_plan(src, bits=2).size_bytes
    budget = (full + small) // 2
    plan = make_plan(src, max_memory=budget)
    assert plan.size_bytes <= budget
    experts = {t.module: t.quant.bits for t in plan.tensors if ".switch_mlp." in t.name}
    assert set(experts.values()) <= {2, 3, 4} and min(experts.values()) < 4
    assert experts["mtp.layers.0.mlp.switch_mlp.up_proj"] <= min(experts.values()) + 1
    # sensitive layers are lowered last
    outer = experts["model.layers.0.mlp.switch_mlp.up_proj"]
    middle = experts["model.layers.4.mlp.switch_mlp.up_proj"]
    assert middle <= outer
    result = convert(src, tmp_path / "fit", max_memory=budget, progress=True)
    assert result.size_bytes <= budget
    assert "estimated" in capsys.readouterr().err
    same_logits_in_both_loaders(tmp_path / "fit")
    assert make_plan(src, max_memory=10**12).size_bytes == full  # fits: unchanged
    with pytest.raises(ConvertError, match="cannot fit in"):
        make_plan(src, max_memory=small // 2)


@pytest.mark.parametrize(
    "text, n",
    [("40GB", 40 * 10**9), ("40 gb", 40 * 10**9), ("1.5GiB", int(1.5 * 2**30)), ("512MB", 512 * 10**6), (123, 123)],
)
def test_parse_size(text, n):
    assert parse_size(text) == n


def test_recipe_errors():
    with pytest.raises(ConvertError, match="unknown recipe"):
        make_recipe("q4_k_m")
    with pytest.raises(ConvertError, match="bits must be"):
        make_recipe("4bit", bits=7)
