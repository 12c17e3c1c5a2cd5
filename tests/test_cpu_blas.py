"""The system OpenBLAS is loaded before mlx.core on Linux, and active_blas() says which
BLAS the process really has mapped (read back from /proc/self/maps in a fresh process)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux BLAS loading")

PROBE = """
import sys
{before}
import mlx_qwen3next
mapped = any("libopenblas" in line for line in open("/proc/self/maps"))
print(mlx_qwen3next.active_blas()); print(mapped)
"""


def probe(before: str = "", **env) -> tuple[str, bool]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(before=before)],
                         env={**os.environ, **env}, capture_output=True, text=True, check=True)
    name, mapped = out.stdout.strip().splitlines()
    return name, mapped == "True"


def system_openblas() -> bool:
    from mlx_qwen3next.cpu.blas import _CANDIDATES

    for name in _CANDIDATES:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def test_openblas_is_loaded_when_the_system_has_it():
    name, mapped = probe(MLX_QWEN3NEXT_NO_OPENBLAS="")
    if system_openblas():
        assert name.startswith("openblas") and mapped
    else:
        assert name == "mlx-bundled (no system OpenBLAS found)"


def test_opting_out_is_reported_and_honoured():
    name, mapped = probe(MLX_QWEN3NEXT_NO_OPENBLAS="1")
    assert "disabled by MLX_QWEN3NEXT_NO_OPENBLAS" in name and not mapped


def test_mlx_imported_first_is_reported():
    name, mapped = probe("import mlx.core", MLX_QWEN3NEXT_NO_OPENBLAS="")
    assert "mlx.core was imported before" in name and not mapped
