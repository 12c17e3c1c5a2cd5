"""The primitive count of bench/e2e.py: each mx.fast op counts as the one kernel it is on Metal."""

import sys
from collections import Counter
from pathlib import Path

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx.core)
import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from measures import FastOpCounter, as_on_metal, dot_labels, kinds_of  # noqa: E402


def metal_kinds(fn, *args) -> Counter:
    with FastOpCounter() as fast:
        out = mx.compile(fn)(*args)
    return as_on_metal(kinds_of(dot_labels(out)), fast)


def test_a_fast_op_is_one_primitive_and_fuses_with_no_neighbour():
    """Here rms_norm runs as ops, and mx.compile would fuse its last elementwise ops with
    the sigmoid after it; on Metal the norm is one kernel and the sigmoid another."""
    x, w = mx.random.normal((4, 64)), mx.random.normal((64,))
    mx.eval(x, w)
    kinds = metal_kinds(lambda x: mx.sigmoid(mx.fast.rms_norm(mx.exp(x), w, 1e-6)) * 2, x)
    assert kinds == Counter({"Exp": 1, "fast.rms_norm": 1, "Compiled": 1})


def test_each_call_of_a_fast_op_counts_once():
    x, w = mx.random.normal((4, 64)), mx.random.normal((64,))
    mx.eval(x, w)
    kinds = metal_kinds(lambda x: mx.fast.rms_norm(mx.fast.rms_norm(x, w, 1e-6), w, 1e-6), x)
    assert kinds == Counter({"fast.rms_norm": 2})


def test_decode_graphs_of_both_sides_float32_and_4bit(tmp_path):
    """bench/graph.py on a tiny slice: one mx.fast delta-rule call per DeltaNet layer on
    both sides, and after nn.quantize every expert product is a quantized gather (per MoE
    layer, 2 of ours: gate and up joined, model/fused.py; 3 of mlx-lm's)."""
    from graph import side
    from runners import MlxLm, Ours
    from slice import build_slice
    from test_slice import TINY

    path = build_slice(tmp_path / "s", layers=4, experts=8,
                       **dict(TINY, shared_expert_intermediate_size=64))  # groups of 32
    for cls in (Ours, MlxLm):
        counts = side(cls, path, group_size=32)
        assert counts["float32"]["fast.gated_delta_update"] == 3, cls.name
        gathers = 4 * (2 if cls is Ours else 3)
        assert counts["float32"]["GatherMM"] == gathers and counts["4-bit"]["GatherMM"] == 0
        assert counts["4-bit"]["GatherQMM"] == gathers
