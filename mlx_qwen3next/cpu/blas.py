"""Load a system OpenBLAS before mlx.core so MLX's float32 CPU matmul uses it.

MLX's Linux wheels resolve their BLAS symbols at load time; a library loaded
earlier with RTLD_GLOBAL wins. The reference BLAS they fall back to is ~70x
slower for float32 matmul on the CPU. Set MLX_QWEN3NEXT_NO_OPENBLAS=1 to skip.
"""

import ctypes
import os
import sys
from contextlib import contextmanager

_CANDIDATES = (
    "libopenblas.so.0",
    "libopenblas.so",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
)

_active = "default"
_lib = None  # the OpenBLAS we loaded, for its thread-count calls


def load_openblas() -> str:
    """Load OpenBLAS globally if possible; return the name of the active BLAS."""
    global _active, _lib
    if not sys.platform.startswith("linux"):
        _active = "accelerate" if sys.platform == "darwin" else "default"
        return _active
    if os.environ.get("MLX_QWEN3NEXT_NO_OPENBLAS", "") not in ("", "0"):
        _active = "mlx-bundled (OpenBLAS disabled by MLX_QWEN3NEXT_NO_OPENBLAS)"
        return _active
    if "mlx.core" in sys.modules:
        _active = "mlx-bundled (mlx.core was imported before mlx_qwen3next)"
        return _active
    for name in _CANDIDATES:
        try:
            lib = ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        _lib = lib
        _active = f"openblas ({_openblas_config(lib) or name})"
        return _active
    _active = "mlx-bundled (no system OpenBLAS found)"
    return _active


def _openblas_config(lib) -> str:
    try:
        fn = lib.openblas_get_config
    except AttributeError:
        return ""
    fn.restype = ctypes.c_char_p
    return fn().decode(errors="replace").strip()


def openblas():
    """The OpenBLAS library this module loaded (ctypes), or None."""
    return _lib


def active_blas() -> str:
    """Which BLAS MLX's CPU matmul uses in this process."""
    return _active


@contextmanager
def blas_threads(n: int):
    """Run the block with OpenBLAS using n threads (a no-op with any other BLAS).

    Only what is evaluated inside the block is affected: MLX is lazy."""
    get = getattr(_lib, "openblas_get_num_threads", None)
    set_ = getattr(_lib, "openblas_set_num_threads", None)
    if get is None or set_ is None:
        yield
        return
    before = get()
    set_(n)
    try:
        yield
    finally:
        set_(before)
