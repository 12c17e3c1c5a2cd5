"""Converting a tiny checkpoint: mlx-lm's layout bit for bit, loads in mlx-lm and in
mlx_qwen3next with the same logits, gates at 8 bits on disk, streamed shards."""

import glob
import json
from pathlib import Path

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx)
import mlx.core as mx
import pytest
from mlx_lm.utils import load_model as mlx_lm_load_model

from mlx_qwen3next.quantize import convert
from mlx_qwen3next.testing.tiny import tiny_config, write_checkpoint

# moe/shared sizes of 64 so that group size 64 divides every input dimension
CFG = tiny_config(moe_intermediate_size=64, shared_expert_intermediate_size=64)
IDS = mx.array([[1, 5, 9, 200, 33, 7, 8, 100, 17, 300, 41, 2]])


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("src") / "tiny", CFG, dtype="float32")


@pytest.fixture(scope="module")
def out(src, tmp_path_factory):
    target = tmp_path_factory.mktemp("out") / "tiny-4bit"
    convert(src, target, shard_bytes=200_000, progress=False)
    return target


def read_all(directory, pattern="*.safetensors"):
    weights = {}
    for f in sorted(glob.glob(str(Path(directory) / pattern))):
        weights.update(mx.load(f))
    return weights


def test_same_tensors_as_mlx_lm_convert(src, out, tmp_path):
    from mlx_lm.convert import convert as mlx_lm_convert

    ref = tmp_path / "ref"
    mlx_lm_convert(str(src), str(ref), quantize=True, q_group_size=64, q_bits=4)
    ours, theirs = read_all(out), read_all(ref)
    assert set(theirs) == {k for k in ours if not k.startswith("mtp.")}
    for k, v in theirs.items():
        assert ours[k].dtype == v.dtype and ours[k].shape == v.shape, k
        assert mx.array_equal(ours[k], v).item(), k
    q_ours = json.loads((out / "config.json").read_text())["quantization"]
    q_theirs = json.loads((ref / "config.json").read_text())["quantization"]
    for path, spec in q_theirs.items():
        if isinstance(spec, dict):  # ours also names the mode
            spec = {**spec, "mode": "affine"}
        assert q_ours[path] == spec


def test_layout_and_files(src, out):
    w = read_all(out)
    assert w["model.layers.0.mlp.switch_mlp.gate_proj.weight"].shape[0] == CFG["num_experts"]
    assert not any(".experts." in k for k in w)
    assert w["model.layers.0.linear_attn.conv1d.weight"].shape[-1] == 1
    source = read_all(src)
    for norm in ("model.norm.weight", "mtp.pre_fc_norm_hidden.weight", "mtp.layers.0.self_attn.q_norm.weight"):
        assert mx.allclose(w[norm], source[norm] + 1.0).item(), norm
    gated = "model.layers.0.linear_attn.norm.weight"
    assert mx.array_equal(w[gated], source[gated]).item()
    # mtp.* in its own files (mlx-lm reads only model*.safetensors), all in the index
    assert all(k.startswith("mtp.") for k in read_all(out, "mtp-*.safetensors"))
    assert not any(k.startswith("mtp.") for k in read_all(out, "model-*.safetensors"))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(w)
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in w.values())
    assert len(glob.glob(str(out / "model-*.safetensors"))) > 1  # 200 kB shards
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).read_bytes() == (src / name).read_bytes()
    assert not list(out.parent.glob(".*converting*"))


def test_gates_are_8bit_on_disk(out):
    w = read_all(out)
    for layer in ("model.layers.0", "model.layers.3", "mtp.layers.0"):
        for gate in ("mlp.gate", "mlp.shared_expert_gate"):
            packed, scales = w[f"{layer}.{gate}.weight"], w[f"{layer}.{gate}.scales"]
            in_dim = CFG["hidden_size"]
            assert packed.shape[-1] * 32 // in_dim == 8, f"{layer}.{gate}"
            assert in_dim // scales.shape[-1] == 64
        experts = w[f"{layer}.mlp.switch_mlp.up_proj.weight"]
        assert experts.shape[-1] * 32 // CFG["hidden_size"] == 4


def test_loads_in_mlx_lm_and_ours_with_same_logits(out):
    theirs, _ = mlx_lm_load_model(out)  # strict: the mtp files are not read
    ours = mlx_qwen3next.load_model(out)
    a, b = ours(IDS), theirs(IDS)
    assert a.dtype == b.dtype == mx.float32
    rel = (mx.abs(a - b).max() / mx.abs(b).max()).item()
    print(f"ours vs mlx-lm on the converted checkpoint: max relative difference {rel:.2e}")
    assert rel <= 1e-4
    assert any(k.startswith("mtp.") for k, _ in _flat(ours.parameters()))


def _flat(params):
    from mlx.utils import tree_flatten

    return tree_flatten(params)
