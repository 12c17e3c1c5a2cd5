"""The model split across processes (machines) over mx.distributed, launched by mlx.launch."""

from .group import Link, PeerLost, current, init, rank
from .load import gather_reports, load_pipelined, load_stage
from .pipeline import PipelineModel
from .stage import Stage

__all__ = ["Link", "PeerLost", "PipelineModel", "Stage", "current", "gather_reports", "init",
           "load_pipelined", "load_stage", "rank"]
