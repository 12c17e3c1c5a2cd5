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
A second projection counts the weight bytes the real 4-bit model reads per
forward (verifying k + 1 tokens reads the distinct routed experts they pick),
which is what memory-bound decode on Apple silicon is proportional to.
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


def unique_experts(tokens: int, experts: int = 512, top_k: int = 10) -> float:
    """Expected distinct experts that `tokens` tokens route to (independent top-k picks)."""
    return experts * (1 - (1 - top_k / experts) ** tokens)


def bytes_model(tokens: int, bits: float = 4.5, draft: bool = False) -> float:
    """Weight bytes one forward of the real 4-bit model reads (4.5 bits: 4-bit + g64 scales).

    Per layer: dense projections + shared expert + router, and the distinct routed
    experts the tokens pick; plus lm_head. A draft step is one attention + MoE layer,
    the fc and lm_head. Memory-bound decode time is proportional to this.
    """
    H, expert = 2048, 3 * 2048 * 512
    deltanet = 12288 * H + 64 * H + H * 4096 + expert + 512 * H  # qkvz, ba, out, shared, router
    attention = 8192 * H + 2 * 512 * H + H * 4096 + expert + 512 * H
    routed = unique_experts(tokens) * expert
    lm_head = 151936 * H
    if draft:
        return (attention + routed + 2 * H * H + lm_head) * bits / 8
    return (REAL_LINEAR * (deltanet + routed) + REAL_ATTENTION * (attention + routed)
            + lm_head) * bits / 8


def speedup_rows(single, verify, draft):
    rows = []
    for k in range(1, 5):
        row = []
        for a in (0.6, 0.8, 0.9):
            tokens = (1 - a ** (k + 1)) / (1 - a)
            row.append(f"{tokens * single / (verify[k] + k * draft):.2f}x")
        rows.append(f"| {k} | " + " | ".join(row) + " |")
    return rows


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
    print("Projected from the measured CPU costs (float32):\n")
    print("| k | speed-up at acceptance 0.6 | 0.8 | 0.9 |")
    print("|---|---|---|---|")
    print("\n".join(speedup_rows(t1, verify, draft)))
    b1 = bytes_model(1)
    bverify = {k: bytes_model(k + 1) for k in range(1, 5)}
    print(f"\nBandwidth model of the real 4-bit model (512 experts, memory-bound decode): "
          f"one token reads {b1 / 1e9:.2f} GB; verify k=1..4 reads "
          + ", ".join(f"{bverify[k] / b1:.2f}x" for k in range(1, 5))
          + f"; a draft step {bytes_model(1, draft=True) / b1:.3f}x.\n")
    print("| k | speed-up at acceptance 0.6 | 0.8 | 0.9 |")
    print("|---|---|---|---|")
    print("\n".join(speedup_rows(b1, bverify, bytes_model(1, draft=True))))


if __name__ == "__main__":
    main()
