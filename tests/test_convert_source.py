"""The converter checks its source as strictly as the loader before it writes anything:
one line naming the file or tensor, a non-zero exit at the CLI, nothing left behind.
Also: tensors the group size cannot divide stay in float under the default recipe, and
--bits is never written under another recipe's name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx)
import mlx.core as mx
from mlx_lm.utils import load_model as mlx_lm_load_model
from mlx_qwen3next import load_model
from mlx_qwen3next.quantize import ConvertError, convert
from mlx_qwen3next.testing.tiny import tiny_config, write_checkpoint

CFG = tiny_config(moe_intermediate_size=64, shared_expert_intermediate_size=64)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("src") / "tiny", CFG, dtype="float32")


def edited(src: Path, dst: Path, edit) -> Path:
    """A copy of `src` whose tensors went through edit(dict of arrays) -> dict; each
    tensor stays in its shard, new ones go to the first."""
    shutil.copytree(src, dst)
    index_file = dst / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    shards = sorted(set(index["weight_map"].values()))
    where = {k: shards.index(v) for k, v in index["weight_map"].items()}
    tensors = edit({k: v for f in shards for k, v in mx.load(str(dst / f)).items()})
    for i, shard in enumerate(shards):
        mx.save_safetensors(str(dst / shard),
                            {k: v for k, v in tensors.items() if where.get(k, 0) == i})
    index["weight_map"] = {k: shards[where.get(k, 0)] for k in tensors}
    index_file.write_text(json.dumps(index))
    return dst


def refused(match: str, source: Path, target: Path) -> str:
    with pytest.raises(ConvertError, match=match) as e:
        convert(source, target, progress=False)
    message = str(e.value)
    assert "\n" not in message
    assert not target.exists() and not list(target.parent.glob(f".{target.name}.*"))
    return message


def test_a_shard_named_in_the_index_is_missing(src, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    (broken / "model-00001-of-00002.safetensors").unlink()
    refused("model-00001-of-00002.safetensors: shard listed in model.safetensors.index.json "
            "is missing", broken, tmp_path / "out")


NORM = "model.layers.1.input_layernorm.weight"
PROJ = "model.layers.0.linear_attn.in_proj_ba.weight"


@pytest.mark.parametrize("edit, match", [
    (lambda w: {k: v for k, v in w.items() if k != NORM}, f"missing tensor {NORM}"),
    (lambda w: {k: (v[:, :-1] if k == PROJ else v) for k, v in w.items()},
     rf"tensor {PROJ} has shape \(8, 63\), expected \(8, 64\)"),
    (lambda w: {**w, "model.layers.0.extra.weight": mx.zeros((4,))},
     "unexpected tensor model.layers.0.extra.weight"),
    (lambda w: {k: (v.astype(mx.int32) if k == PROJ else v) for k, v in w.items()},
     f"tensor {PROJ} is I32, expected a float"),
    (lambda w: {k: v for k, v in w.items() if ".experts." not in k or ".up_proj." not in k},
     r"missing tensor model.layers.0.mlp.experts.\*.up_proj.weight"),
])
def test_broken_tensors_are_refused(src, tmp_path, edit, match):
    broken = edited(src, tmp_path / "broken", edit)
    message = refused(match, broken, tmp_path / "out")
    assert str(broken) in message


def test_missing_tokenizer_files_are_refused(src, tmp_path):
    for missing in ("tokenizer.json", "tokenizer_config.json"):
        broken = tmp_path / f"no-{missing}"
        shutil.copytree(src, broken)
        (broken / missing).unlink()
        refused(f"{missing} is missing", broken, tmp_path / f"out-{missing}")


def test_group_size_that_cannot_divide_keeps_the_tensor_in_float(tmp_path):
    """moe_intermediate_size 32: the experts' down_proj (input 32) cannot be grouped by
    64. The default recipe keeps them in float and says so; mlx-lm loads the result."""
    cfg = tiny_config(moe_intermediate_size=32, shared_expert_intermediate_size=64)
    source = write_checkpoint(tmp_path / "tiny32", cfg, dtype="float32")
    result = convert(source, tmp_path / "out", progress=False)
    assert "kept in float" in result.summary() and "switch_mlp.down_proj" in result.summary()
    weights = {}
    for f in (tmp_path / "out").glob("*.safetensors"):
        weights.update(mx.load(str(f)))
    down = "model.layers.0.mlp.switch_mlp.down_proj"
    assert weights[f"{down}.weight"].dtype == mx.float32 and f"{down}.scales" not in weights
    assert weights["model.layers.0.mlp.switch_mlp.up_proj.weight"].dtype == mx.uint32
    ids = mx.array([[1, 5, 9, 200, 33, 7]])
    ours, (theirs, _) = load_model(tmp_path / "out"), mlx_lm_load_model(tmp_path / "out")
    a, b = np.array(ours(ids)), np.array(theirs(ids))
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    with pytest.raises(ConvertError, match="group size 64 does not divide the input "
                                           "dimension 32 of model.layers.0.mlp.switch_mlp"):
        convert(source, tmp_path / "explicit", group_size=64, progress=False)


def test_bits_are_named_for_what_is_written(src, tmp_path):
    with pytest.raises(ConvertError, match="recipe 8bit writes 8 bits, not 3"):
        convert(src, tmp_path / "a", recipe="8bit", bits=3, progress=False)
    with pytest.raises(ConvertError, match="mixed-3-4 sets its own bits"):
        convert(src, tmp_path / "b", recipe="mixed-3-4", bits=4, progress=False)
    result = convert(src, tmp_path / "c", bits=3, progress=False)
    assert result.recipe == "3bit" and "(recipe 3bit)" in result.summary()
    assert json.loads((tmp_path / "c" / "config.json").read_text())["quantization"]["bits"] == 3
