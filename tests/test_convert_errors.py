"""Bad input and failed writes: a one-line ConvertError each, and nothing at the
target (nor any scratch directory) that could be loaded."""

import os
import subprocess
import uuid
from pathlib import Path

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx)
import pytest

from mlx_qwen3next.quantize import ConvertError, convert
from mlx_qwen3next.testing.tiny import tiny_config, write_checkpoint

CFG = tiny_config(moe_intermediate_size=64, shared_expert_intermediate_size=64)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("src") / "tiny", CFG)


def fails(match, *args, **kwargs):
    with pytest.raises(ConvertError, match=match) as e:
        convert(*args, progress=False, **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


def nothing_left(target: Path):
    assert not target.exists() or not any(target.iterdir())
    assert not list(target.parent.glob(f".{target.name}.*"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"recipe": "3bit"}, "unknown recipe '3bit'"),
        ({"bits": 7}, "bits must be one of 2, 3, 4, 5, 6, 8"),
        ({"bits": 1}, "bits must be one of"),
        ({"group_size": 16}, "group size must be one of 32, 64, 128"),
        ({"group_size": 128}, "group size 128 does not divide the input dimension 64 of"),
        ({"max_memory": "10kB"}, "cannot fit in"),
        ({"max_memory": "lots"}, "cannot read the size"),
    ],
)
def test_bad_options(src, tmp_path, kwargs, match):
    fails(match, src, tmp_path / "out", **kwargs)
    nothing_left(tmp_path / "out")


def test_no_safetensors(src, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_bytes((src / "config.json").read_bytes())
    fails("no .safetensors", empty, tmp_path / "out")
    fails("not a directory", tmp_path / "missing", tmp_path / "out")
    nothing_left(tmp_path / "out")


def test_existing_target_needs_force(src, tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    fails("exists and is not empty .use --force", src, target)
    assert (target / "keep.txt").read_text() == "mine"
    convert(src, target, force=True, progress=False)
    assert not (target / "keep.txt").exists() and (target / "config.json").is_file()
    fails("must not be the source", src, src, force=True)
    convert(src, tmp_path / "empty-dir-ok", progress=False)  # missing is fine
    (tmp_path / "empty").mkdir()
    convert(src, tmp_path / "empty", progress=False)  # empty is fine


def test_interrupted_run_leaves_nothing_and_next_run_is_clean(src, tmp_path):
    target = tmp_path / "out"

    def interrupt(done, total, name):
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(src, target, progress=False, on_progress=interrupt)
    nothing_left(target)
    stale = tmp_path / ".out.converting-999999999"  # a killed run's scratch dir
    stale.mkdir()
    (stale / "model-00001-of-00001.safetensors").write_bytes(b"partial")
    convert(src, target, progress=False)
    assert not stale.exists() and (target / "config.json").is_file()


@pytest.fixture
def small_fs(tmp_path):
    """A 600 kB tmpfs (root only)."""
    mnt = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_disk_too_small_is_refused_before_writing(src, small_fs):
    fails("not enough disk space at .*: the output needs 0.8. MB, 0.6. MB is free", src, small_fs / "out", recipe="8bit")
    nothing_left(small_fs / "out")


def test_disk_filling_up_mid_way(src, small_fs):
    """Another writer fills the disk while we convert: a real ENOSPC mid-way."""
    target = small_fs / "out"

    def fill(done, total, name):
        if done > total // 3 and not (small_fs / "filler").exists():
            with open(small_fs / "filler", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 4096)
                        f.flush()
                except OSError:
                    pass

    msg = fails("No space left on device", src, target, on_progress=fill)
    assert str(target) in msg
    nothing_left(target)
    os.remove(small_fs / "filler")
    convert(src, target, progress=False)  # room again: the next run succeeds
    assert (target / "config.json").is_file()
