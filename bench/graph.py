"""One decode step's graph as a GPU runs it, ours against mlx-lm's qwen3_next: primitives
and kernel launches, with the slice's float32 weights and with 4-bit weights (what a Mac
runs: quantized products take no transposed weight and fold no batch axes).

Counting only, no timing: each side loads the e2e slice (bench/slice.py, built on first
use), prefills 8 tokens, takes two decode steps, and its third is counted as in
bench/e2e.py (plain modules, each mx.fast op one primitive). Then nn.quantize (group 64,
4 bits, the same call on both sides) and the step is counted again.

    python bench/graph.py                     # 4-layer slice in /tmp/qwen3next_e2e
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import mlx_qwen3next  # noqa: E402,F401  (OpenBLAS before mlx.core)
import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402

from e2e import ensure_slice  # noqa: E402
from e2e_report import fmt_ratio  # noqa: E402
from measures import VIEWS, count_primitives, launches  # noqa: E402
from runners import MlxLm, Ours  # noqa: E402


def counted_step(r) -> Counter:
    """The GPU-graph primitives of r's third decode step after an 8-token prompt."""
    cache = r.make_cache()
    tok = mx.argmax(r.prefill(mx.arange(1, 9)[None], cache)[:, -1], -1, keepdims=True)
    for _ in range(2):
        mx.eval(tok, r.cache_arrays(cache))
        tok = mx.argmax(r.step(tok, cache)[:, -1], -1, keepdims=True)
    mx.eval(tok, r.cache_arrays(cache))
    with r.as_on_metal():
        return count_primitives(r, cache, tok, on_metal=True)


def side(cls, path: Path, group_size: int = 64) -> dict[str, Counter]:
    r = cls(path)
    out = {"float32": counted_step(r)}
    nn.quantize(r.model, group_size=group_size, bits=4)
    r.retrace()
    out["4-bit"] = counted_step(r)
    r.free()
    return out


def report(res: dict) -> str:
    ours, theirs = res["ours"], res["mlx-lm"]
    rows = ["| weights | per decode step | ours | mlx-lm | ours / mlx-lm |", "|---|---|---|---|---|"]
    for w in ("float32", "4-bit"):
        for name, f in (("primitives", lambda k: sum(k.values())), ("kernel launches", launches)):
            a, b = f(ours[w]), f(theirs[w])
            rows.append(f"| {w} | {name} | {a} | {b} | {fmt_ratio(a, b)} |")
    o, m = ours["4-bit"], theirs["4-bit"]
    kinds = sorted(set(o) | set(m), key=lambda k: -(o.get(k, 0) + m.get(k, 0)))
    rows += ["", "| primitive (4-bit, GPU graph) | ours | mlx-lm |", "|---|---|---|"]
    rows += [f"| {k}{' (view)' if k in VIEWS else ''} | {o.get(k, 0)} | {m.get(k, 0)} |"
             for k in kinds]
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/qwen3next_e2e"))
    args = ap.parse_args(argv)
    path = ensure_slice(args.workdir, [args.layers], rebuild=False)[args.layers]
    res = {r.name: side(r, path) for r in (Ours, MlxLm)}
    print(f"### {args.layers}-layer slice: one decode step's GPU graph\n")
    print(report(res))


if __name__ == "__main__":
    main()
