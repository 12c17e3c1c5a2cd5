"""Helpers for the CLI tests: tiny converted models, isolated app/Hub folders, and
running `python -m mlx_qwen3next.cli` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx)
import mlx.core as mx

from mlx_qwen3next.testing.demo import DEMO_CONFIG
from mlx_qwen3next.testing.tiny import write_checkpoint

CLI = [sys.executable, "-m", "mlx_qwen3next.cli"]


def tiny_source(path: Path, rambling: bool = False) -> Path:
    """The demo's tiny bf16 checkpoint. `rambling`: the lm_head rows of the end-of-turn
    ids are zeroed, so their logit is exactly 0 while hundreds of others are positive:
    the model never ends a reply by itself (replies last until max_tokens), which
    the Ctrl-C tests need."""
    src = write_checkpoint(path, DEMO_CONFIG, dtype="bfloat16", seed=0)
    if rambling:
        eos = json.loads((src / "generation_config.json").read_text())["eos_token_id"]
        index = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
        shard = src / index["lm_head.weight"]
        weights = mx.load(str(shard))
        head = weights["lm_head.weight"]
        keep = mx.array([0.0 if i in eos else 1.0 for i in range(head.shape[0])], dtype=head.dtype)
        weights["lm_head.weight"] = head * keep[:, None]
        mx.save_safetensors(str(shard), weights, metadata={"format": "pt"})
    return src


def converted(tmp: Path, name: str = "tiny-4bit", rambling: bool = False) -> Path:
    from mlx_qwen3next.quantize import convert

    src = tiny_source(tmp / f"{name}-src", rambling)
    return convert(src, tmp / name, progress=False).path


def isolated_env(tmp: Path, **extra) -> dict:
    """Environment for a CLI subprocess: its own app home and Hub cache."""
    env = dict(os.environ)
    for key in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_HOME", "QWEN3NEXT_DEBUG"):
        env.pop(key, None)
    env.update(
        QWEN3NEXT_HOME=str(tmp / "home"),
        HF_HUB_CACHE=str(tmp / "hub"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_ETAG_TIMEOUT="5",
        HF_HUB_DOWNLOAD_TIMEOUT="5",
        COLUMNS="200",
        PYTHONUNBUFFERED="1",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(args, env, input=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + [str(a) for a in args], env=env, input=input, text=True,
                          capture_output=True, timeout=timeout)


def one_line_error(result) -> str:
    """Assert the failure shape every command shares; return the message."""
    assert result.exit_code if hasattr(result, "exit_code") else result.returncode
    err = result.stderr.strip()
    assert "Traceback" not in err and "Traceback" not in (result.stdout or "")
    assert len(err.splitlines()) == 1, err
    assert err.startswith("qwen3next: error: "), err
    return err
