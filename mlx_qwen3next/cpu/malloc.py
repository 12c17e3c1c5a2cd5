"""Keep freed memory in the process for reuse (glibc on Linux), before MLX allocates.

MLX's CPU backend allocates each array with malloc and frees it when done; it
keeps no buffer cache of its own there (mx.get_cache_memory() stays 0). glibc
serves every block above its mmap threshold (at most 32 MB) with a fresh mmap
and unmaps it on free, so every large intermediate of a prefill is first-touched
page by page: on this project's VM a 64 MB elementwise op took 60-70 ms, of
which ~50 ms were page faults. With mmap off and trimming raised, freed blocks
are reused (15 ms). The cost is the usual one of a heap: memory freed below
live blocks is not returned to the system. Set MLX_QWEN3NEXT_NO_MALLOPT=1 to skip.
"""

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GB of free heap top before returning it

_tuned = False


def tune_malloc() -> bool:
    """Apply the settings once; True when they are in effect."""
    global _tuned
    if _tuned or not sys.platform.startswith("linux"):
        return _tuned
    if os.environ.get("MLX_QWEN3NEXT_NO_MALLOPT", "") not in ("", "0"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    _tuned = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _tuned


def malloc_tuned() -> bool:
    return _tuned
