"""4-bit products on the CPU: MLX's quantized matmul on bf16 activations (the plain
module), on float32 activations, and dequantize + OpenBLAS; time and error against the
exact product, and the same comparison through a whole tiny 4-bit model's prefill
and decode, ours against mlx-lm. What cpu/quantized.py chooses from.

    python bench/quantized.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx.core)
import mlx.core as mx
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from server import DOC  # noqa: E402


def best(f, n: int = 3) -> float:
    out = 1e9
    for _ in range(n):
        t = time.perf_counter()
        mx.eval(f())
        out = min(out, time.perf_counter() - t)
    return out


def products(out_dims: int = 4096, in_dims: int = 2048):
    f32 = lambda a: a.astype(mx.float32)
    w, s, b = mx.quantize(mx.random.normal((out_dims, in_dims)), 64, 4)
    s, b = s.astype(mx.bfloat16), b.astype(mx.bfloat16)  # as a converted bf16 checkpoint
    mx.eval(w, s, b)
    W = np.asarray(mx.dequantize(w, f32(s), f32(b), 64, 4), np.float64)
    ways = {
        "quantized matmul, bf16 activations (plain)":
            lambda x: mx.quantized_matmul(x, w, s, b, True, 64, 4),
        "quantized matmul, float32 activations":
            lambda x: mx.quantized_matmul(f32(x), w, s, b, True, 64, 4).astype(x.dtype),
        "dequantize (float32) + OpenBLAS":
            lambda x: (f32(x) @ mx.dequantize(w, f32(s), f32(b), 64, 4).T).astype(x.dtype),
    }
    rows = (1, 8, 64, 256)
    print(f"### {out_dims} x {in_dims} weight, 4 bits, group 64: ms per product "
          f"(relative error at 8 rows)\n")
    print("| product | " + " | ".join(f"{r} rows" for r in rows) + " | error |")
    print("|---|" + "---|" * (len(rows) + 1))
    for name, f in ways.items():
        times = []
        for r in rows:
            x = mx.random.normal((1, r, in_dims), key=mx.random.key(r)).astype(mx.bfloat16)
            mx.eval(x)
            times.append(best(lambda: f(x)))
        x = mx.random.normal((1, 8, in_dims), key=mx.random.key(8)).astype(mx.bfloat16)
        exact = np.asarray(f32(x), np.float64) @ W.T
        got = np.asarray(f32(f(x)), np.float64)
        err = np.linalg.norm(got - exact) / np.linalg.norm(exact)
        print(f"| {name} | " + " | ".join(f"{t * 1e3:.1f}" for t in times) + f" | {err:.1e} |")


def model():
    from mlx_lm.utils import load as mlx_lm_load

    from mlx_qwen3next import load_model
    from mlx_qwen3next.testing.demo import build

    with tempfile.TemporaryDirectory() as d:
        _, result = build(Path(d), Path(d) / "tiny-4bit")
        ours, theirs = load_model(result.path), None
        plain = load_model(result.path, specialise=False)
        theirs, tok = mlx_lm_load(str(result.path))
        ids = mx.array(tok.encode(DOC + "\nSummarise this."))[None]

        def decode(m):
            cache = m.make_cache()
            mx.eval(m(ids[:, :32], cache=cache))
            return best(lambda: m(ids[:, 32:33], cache=cache), n=7)

        print(f"\n### The demo's tiny random model, 4-bit: prefill {ids.shape[1]} tokens, "
              "one decode step\n")
        print("| model | prefill s | decode ms |\n|---|---|---|")
        for name, m in (("ours (CPU products in float32)", ours),
                        ("ours, plain modules (bf16 products)", plain), ("mlx-lm", theirs)):
            pre = best(lambda: m(ids, cache=m.make_cache())[:, -1], n=2)
            print(f"| {name} | {pre:.2f} | {decode(m) * 1e3:.1f} |")


if __name__ == "__main__":
    products()
    model()
