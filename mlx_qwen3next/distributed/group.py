"""The group of ranks `mlx.launch` started, and the few messages a pipeline exchanges.

Every message is evaluated the moment it is made, in program order. Two messages
between the same pair of ranks in one lazy graph could be scheduled in either
order and read as each other (same shapes), so no send, recv or all_sum waits for
a later `mx.eval`. Every rank runs the same code, so the orders match.

A peer that dies shows up here as MLX's RuntimeError (the ring backend: "connection
to a peer was lost") or as the SIGTERM `mlx.launch` sends the others when one rank
exits badly; both end this rank with one line (`PeerLost`).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Optional

import mlx.core as mx

MODES = ("pipeline", "off")
_group: Optional["Link"] = None  # the group this process joined (None: one process)
_ending = False  # a PeerLost is on its way out


class PeerLost(ConnectionError):
    """Another rank stopped: this one cannot go on."""


class Link:
    """One process's handle on the group: its rank, and eager messages to the others."""

    def __init__(self, group):
        self.group = group
        self.rank, self.size = group.rank(), group.size()

    def _run(self, make):
        try:
            out = make()
            mx.eval(out)
            return out
        except RuntimeError as e:
            global _ending
            _ending = True  # its line is the one line: SIGTERM is ignored from now on
            raise PeerLost(lost_line(self.rank, str(e))) from None

    def send(self, x: mx.array, dst: int):
        self._run(lambda: mx.distributed.send(x, dst, group=self.group))

    def recv(self, shape, dtype, src: int) -> mx.array:
        return self._run(lambda: mx.distributed.recv(shape, dtype, src, group=self.group))

    def share(self, x: mx.array) -> mx.array:
        """The sum over ranks: what one rank holds, the others passing zeros, reaches all."""
        return self._run(lambda: mx.distributed.all_sum(x, group=self.group))

    def gather(self, values: list[int]) -> list[list[int]]:
        """Each rank's `values` (int32), on every rank, in rank order."""
        x = mx.array(values, dtype=mx.int32)[None]
        out = self._run(lambda: mx.distributed.all_gather(x, group=self.group))
        return out.tolist()

    def from_rank0(self, values: list[int], n: int) -> list[int]:
        """Rank 0's n int32 `values` on every rank (the others pass anything)."""
        x = mx.array(values if self.rank == 0 else [0] * n, dtype=mx.int32)
        return self.share(x).tolist()

    def text_from_rank0(self, text: Optional[str]) -> Optional[str]:
        """Rank 0's text (None passes as None) on every rank."""
        data = text.encode("utf-8") if self.rank == 0 and text is not None else b""
        n = self.from_rank0([len(data) if text is not None else -1], 1)[0]
        if n < 0:
            return None
        if n == 0:
            return ""
        return bytes(self.from_rank0(list(data), n)).decode("utf-8")


def lost_line(rank: int, why: str) -> str:
    why = " ".join(why.split()).removeprefix("[ring] ") or "it was ended"
    return f"rank {rank}: another rank stopped ({why}); ending"


def init(mode: Optional[str] = None) -> Optional[Link]:
    """Join the group mlx.launch started: a Link when it has more than one rank and
    `mode` is pipeline (the default then), else None (one process)."""
    global _group
    if mode is not None and mode not in MODES:
        raise ValueError(f"--distributed must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "off" or not launched():
        return None
    group = mx.distributed.init()
    if group.size() < 2:
        return None
    _group = Link(group)
    _end_on_sigterm(_group.rank)
    _agree_on_seed(_group)
    return _group


def launched() -> bool:
    """Started by mlx.launch (or by hand with its variables)."""
    return any(k in os.environ for k in ("MLX_RANK", "OMPI_COMM_WORLD_RANK", "MLX_JACCL_COORDINATOR"))


def current() -> Optional[Link]:
    return _group


def rank() -> int:
    return 0 if _group is None else _group.rank


def _agree_on_seed(link: Link):
    """Unseeded sampling draws the same numbers on every rank (each samples the same
    logits, so the tokens agree); a --seed reseeds all alike."""
    seed = int.from_bytes(os.urandom(4), "little") >> 1
    mx.random.seed(link.from_rank0([seed], 1)[0])


def _end_on_sigterm(rank: int):
    def handler(signum, frame):
        if _ending:  # PeerLost is on its way up and will say so
            return
        print(f"qwen3next: error: {lost_line(rank, 'ended by mlx.launch')}", file=sys.stderr,
              flush=True)
        os._exit(1)

    signal.signal(signal.SIGTERM, handler)
