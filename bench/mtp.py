"""What speculative decoding with the MTP head costs and gains, at the real dimensions.

    python bench/mtp.py [--experts 64] [--context 128] [--repeats 5]

On the real-dimension slice (bench/slice.py: one 3:1 block, float32), times
  - one decode forward of 1 token and the verify forward of k + 1 tokens, k = 1..4,
    each per layer kind (DeltaNet + MoE, attention + MoE) and for the head
    (final norm + lm_head);
  - one MTP draft step (fc, its attention + MoE layer, norm, lm_head).
From those it projects the 48-layer model (36 DeltaNet + 12 attention layers):
time per token without MTP, and with MTP at acceptance 0.6 / 0.8 / 0.9, using
the expected tokens per round (1 - a^(k+1)) / (1 - a) for i.i.d. acceptance a.
Verify forwards keep per-token DeltaNet states (what the speculative loop does).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx.core)
import mlx.core as mx

from mlx_qwen3next import active_blas, load_model
from mlx_qwen3next.model.decoder import step_context
from slice import build_slice

REAL_LINEAR, REAL_ATTENTION = 36, 12


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def layer_costs(model, cache, tokens: list[int], repeats: int):
    """Median ms per layer kind and for the head, for one forward of `tokens` after `cache`."""
    snap = cache.snapshot()
    ids = mx.array([tokens])
    costs = {"linear": [], "attention": [], "head": []}

    def forward():
        cache.restore(snap)
        cache.keep_steps(len(tokens) > 1)
        x = model.model.embed_tokens(ids)
        ctx = step_context(cache, len(tokens), x.dtype)
        mx.eval(x)
        for i, layer in enumerate(model.layers):
            t = time.perf_counter()
            x = layer(x, cache[i], ctx)
            mx.eval(x)
            costs["linear" if layer.is_linear else "attention"].append(time.perf_counter() - t)
        t = time.perf_counter()
        mx.eval(model.logits(model.model.norm(x)))
        costs["head"].append(time.perf_counter() - t)
        cache.keep_steps(False)

    forward()
    for v in costs.values():
        v.clear()
    for _ in range(repeats):
        forward()
    cache.restore(snap)
    return {k: statistics.median(v) * 1e3 for k, v in costs.items()}


def draft_cost(model, hidden, repeats):
    cache = model.mtp.make_cache()
    model.mtp_forward(hidden, mx.array([[1] * hidden.shape[1]]), cache)
    snap = cache.snapshot()

    def step():
        cache.restore(snap)
        logits, out = model.mtp_forward(hidden[:, -1:], mx.array([[5]]), cache)
        mx.eval(logits, out)

    return timed(step, repeats)


def project(c):
    return REAL_LINEAR * c["linear"] + REAL_ATTENTION * c["attention"] + c["head"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = build_slice(tmp, layers=4, experts=args.experts, mtp=True)
        model = load_model(path)
    cache = model.make_cache()
    prompt = mx.random.randint(0, 1000, (1, args.context), key=mx.random.key(0))
    hidden = model.hidden(prompt, cache)
    mx.eval(hidden)

    one = layer_costs(model, cache, [7], args.repeats)
    t1 = project(one)
    draft = draft_cost(model, hidden, args.repeats)
    print(f"# MTP speculative decoding, real dims, {args.experts} experts, float32, "
          f"context {args.context}, BLAS: {active_blas()}\n")
    print("| tokens in forward | DeltaNet layer ms | attention layer ms | head ms "
          "| 48-layer forward ms | x one token |")
    print("|---|---|---|---|---|---|")
    print(f"| 1 | {one['linear']:.2f} | {one['attention']:.2f} | {one['head']:.2f} "
          f"| {t1:.1f} | 1.00 |")
    verify = {}
    for k in range(1, 5):
        c = layer_costs(model, cache, [7] + [11 + i for i in range(k)], args.repeats)
        verify[k] = project(c)
        print(f"| {k + 1} (verify k={k}) | {c['linear']:.2f} | {c['attention']:.2f} "
              f"| {c['head']:.2f} | {verify[k]:.1f} | {verify[k] / t1:.2f} |")
    print(f"\nMTP draft step: {draft:.2f} ms ({draft / t1:.3f} of a 48-layer forward)\n")
    print("| k | projected speed-up at acceptance 0.6 | 0.8 | 0.9 |")
    print("|---|---|---|---|")
    for k in range(1, 5):
        row = []
        for a in (0.6, 0.8, 0.9):
            tokens = (1 - a ** (k + 1)) / (1 - a)
            row.append(f"{tokens * t1 / (verify[k] + k * draft):.2f}x")
        print(f"| {k} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
