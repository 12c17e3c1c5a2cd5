"""Spread independent slices of work over MLX CPU streams, one thread each.

MLX's CPU backend runs a stream's ops in order on that stream's own thread, and
its elementwise ops use one core; OpenBLAS gains little from its threads on
small batched products. So on a multi-core CPU, work that splits cleanly (heads
of the delta rule) runs faster as one slice per stream.
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import mlx.core as mx

MAX_STREAMS = 8
_streams: list = []


def cpu_streams(n: int | None = None) -> list:
    """Up to n CPU streams (default: one per core), created once; [] for one."""
    n = min(n or os.cpu_count() or 1, MAX_STREAMS)
    while len(_streams) < n:
        _streams.append(mx.new_stream(mx.cpu))
    return _streams[:n] if n > 1 else []


def split_count(items: int, n: int | None = None) -> int:
    """How many equal slices of `items` to run at once: the largest divisor of
    `items` that is at most the number of CPU streams."""
    most = max(len(cpu_streams(n)), 1)
    return max(d for d in range(1, most + 1) if items % d == 0)


def on_stream(i: int, parts: int):
    """Context manager placing slice i of `parts` on its own CPU stream."""
    return mx.stream(cpu_streams(parts)[i]) if parts > 1 else nullcontext()
