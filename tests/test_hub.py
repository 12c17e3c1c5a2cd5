"""hub: resolving what the user typed, the models folder, and a prepared Hub cache
used offline (HF_HUB_OFFLINE=1 set before huggingface_hub is imported)."""

from __future__ import annotations

import json
import shutil

import pytest

from cli_support import isolated_env, run_cli, tiny_source
from mlx_qwen3next.checkpoints import hub

SHA = "f" * 40
REPO = "someone/Tiny-Next"


def prepare_cache(cache, src, repo=REPO, sha=SHA):
    """A hand-made Hub cache: refs/main -> sha, snapshots/sha/<files> (as symlinks to
    blobs, like huggingface_hub writes them)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(sha)
    snap, blobs = root / "snapshots" / sha, root / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for i, f in enumerate(sorted(src.iterdir())):
        blob = blobs / f"{i:040x}"
        shutil.copy(f, blob)
        (snap / f.name).symlink_to(blob)
    return snap


@pytest.fixture
def cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setenv("QWEN3NEXT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return tiny_source(tmp_path_factory.mktemp("hub") / "Tiny-Next")


def test_offline_download_from_a_prepared_cache(src, tmp_path):
    snap = prepare_cache(tmp_path / "hub", src)
    env = isolated_env(tmp_path, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9")
    result = run_cli(["download", REPO], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(snap)
    assert "Traceback" not in result.stderr


def test_resolve_order(src, cache, tmp_path):
    snap = prepare_cache(cache, src)
    assert hub.resolve(str(src)) == src  # a folder
    assert hub.resolve(REPO) == snap  # a cached repo id
    mine = hub.models_dir() / "mine-4bit"
    shutil.copytree(src, mine)
    assert hub.resolve("mine-4bit") == mine  # a name in the models folder
    with pytest.raises(hub.HubError, match="not downloaded yet: run `qwen3next download"):
        hub.resolve("other/Model")
    with pytest.raises(hub.HubError, match="unknown model"):
        hub.resolve("nothing-here")
    with pytest.raises(hub.HubError, match="not a directory"):
        hub.resolve(str(src / "config.json"))


def test_list_and_default_models(src, cache):
    assert hub.list_models() == [] and hub.default_model() is None
    prepare_cache(cache, src)
    prepare_cache(cache, src, repo="else/Not-Qwen3-Next")
    cfg = cache / "models--else--Not-Qwen3-Next" / "snapshots" / SHA / "config.json"
    cfg.unlink()
    cfg.write_text(json.dumps({"model_type": "llama"}))
    found = hub.list_models()
    assert [(m.name, m.source) for m in found] == [(REPO, "hub")]
    assert found[0].size_bytes == hub.dir_size(src) and found[0].quantization == "bfloat16"
    assert hub.default_model().name == REPO
    shutil.copytree(src, hub.models_dir() / "converted-one")
    assert hub.default_model().name == "converted-one"  # converted ones come first


def test_default_output_and_quantization_labels(monkeypatch, tmp_path):
    monkeypatch.setenv("QWEN3NEXT_HOME", str(tmp_path))
    assert hub.models_dir() == tmp_path / "models"
    assert hub.default_output(hub.DEFAULT_REPO, "4bit").name == "Qwen3-Next-80B-A3B-Instruct-4bit"
    assert hub.default_output("/x/my-model/", "mixed-3-4").name == "my-model-mixed-3-4"
    assert hub.default_output("/c/models--a--B/snapshots/" + SHA, "8bit").name == "B-8bit"
    assert hub.default_output("m", "4bit", bits=3).name == "m-3bit"
    q = {"group_size": 64, "bits": 4, "model.layers.0.mlp.gate": {"group_size": 64, "bits": 8}}
    assert hub.describe_quantization({"quantization": q}) == "4/8-bit g64"
    assert hub.describe_quantization({"torch_dtype": "bfloat16"}) == "bfloat16"
    assert hub.is_repo_id("Qwen/Qwen3-Next-80B-A3B-Instruct")
    assert not hub.is_repo_id("./a/b") and not hub.is_repo_id("/abs/path") and not hub.is_repo_id("a")
