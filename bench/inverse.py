"""The chunked scan's (I + A)^-1 alone: time, primitives and float32 error of the inverses.

    python bench/inverse.py

Rows: kernels/chunked.py's block_inverse (every device's plain path), the Neumann product
it replaced (written here only to compare), and LAPACK's trtri (the CPU's float32 path).
Two inputs: random A, and a chunk like the one that broke the Neumann product (alike keys,
weak decays, betas near 1).
"""

import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx_qwen3next  # noqa: E402,F401  (OpenBLAS before mlx.core)
import mlx.core as mx  # noqa: E402

from mlx_qwen3next.cpu.delta_rule import tri_inverse  # noqa: E402
from mlx_qwen3next.kernels.chunked import block_inverse  # noqa: E402


def neumann_inverse(A):
    """(I - A)(I + A^2)(I + A^4)...: the inverse chunked.py used until 2026-12-04."""
    X, P, n = -A, mx.eye(A.shape[-1], dtype=A.dtype) - A, 2
    while n < A.shape[-1]:
        X = X @ X
        P = P + P @ X
        n *= 2
    return P


def alike_chunk(shape, C=64):
    unit = lambda x: x / mx.linalg.norm(x, axis=-1, keepdims=True)
    k = unit(mx.random.normal((1, 1, 1, 32)) + 0.05 * mx.random.normal((*shape, C, 32)))
    G = mx.cumsum(-0.01 * mx.random.uniform(shape=(*shape, C)), axis=-1)
    decay = mx.exp(mx.minimum(G[..., :, None] - G[..., None, :], 0))
    beta = 0.85 + 0.1 * mx.random.uniform(shape=(*shape, C, 1))
    return mx.tril(k @ k.swapaxes(-1, -2) * decay * beta, -1)


def primitives(out) -> int:
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "g.dot")
        mx.export_to_dot(f, out)
        return len(re.findall(r"shape=rectangle", Path(f).read_text()))


def main():
    mx.random.seed(0)
    shape = (8, 32)  # 8 chunks (one 512-token group) x 32 value heads
    inputs = {"random": mx.tril(0.1 * mx.random.normal((*shape, 64, 64)), -1),
              "alike keys": alike_chunk(shape)}
    print(f"| inverse, [{shape[0]} chunks, {shape[1]} heads, 64, 64] float32 | ms (best of 5) "
          "| primitives | max error, random | max error, alike keys |")
    print("|---|---|---|---|---|")
    with mx.stream(mx.cpu):
        truth = {k: mx.linalg.tri_inv((mx.eye(64) + A.astype(mx.float64)).reshape(-1, 64, 64),
                                      upper=False) for k, A in inputs.items()}
    for name, f in (("block doubling (chunked.py)", block_inverse),
                    ("Neumann product (until 2026-12-04)", neumann_inverse),
                    ("LAPACK trtri (CPU, float32)", tri_inverse)):
        A = inputs["random"]
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            mx.eval(f(A))
            best = min(best, time.perf_counter() - t)
        errs = []
        for k, A in inputs.items():
            with mx.stream(mx.cpu):
                got = f(A).reshape(-1, 64, 64).astype(mx.float64)
                errs.append(mx.abs(got - truth[k]).max().item())
        print(f"| {name} | {best * 1e3:.1f} | {primitives(f(A))} | {errs[0]:.1e} | {errs[1]:.1e} |")


if __name__ == "__main__":
    main()
