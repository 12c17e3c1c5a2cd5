"""What speculative decoding with the MTP head costs and gains, at the real dimensions.

    python bench/mtp.py [--experts 64] [--context 128] [--repeats 5] [--slice DIR]
                        [--loop-tokens 32]
    python bench/mtp.py --model mlx_qwen3next/assets/qwen3next-tiny   # bench/mtp_model.py

On the real-dimension slice (bench/slice.py: one 3:1 block, float32; built in a
temporary folder, or read from --slice, e.g. /tmp/qwen3next_e2e/slice4 from
bench/e2e.py), times
  - one decode forward of 1 token and the verify forward of k + 1 tokens, k = 1..4,
    each per layer kind (DeltaNet + MoE, attention + MoE) and for the head
    (final norm + lm_head), on both paths: compiled (model/compiled.py: compiled
    per-layer steps, what decoding runs) and plain (DecoderLayer, the reference);
  - an MTP draft step (fc, its attention + MoE layer, norm, lm_head of the last
    position) on 1..5 tokens, both paths: a round's first draft step takes the
    tokens the previous verify yielded, the others one.
Every configuration is run once per repeat, in turn, after one warm-up round
(which also traces the compiled steps), and the medians are reported: the
machine is shared, so A/B comparisons are only fair inside one process.
From those it projects the 48-layer model (36 DeltaNet + 12 attention layers):
time per token without MTP (compiled one-token forward), and with MTP at acceptance
0.6 / 0.8 / 0.9, for i.i.d. acceptance a: expected tokens per round
(1 - a^(k+1)) / (1 - a) over the verify plus k draft steps (the first one priced at
the expected number of tokens it takes; see speedup()).
A second projection counts the weight bytes the real 4-bit model reads per
forward (verifying k + 1 tokens reads the distinct routed experts they pick),
which is what memory-bound decode on Apple silicon is proportional to.
A third, the bytes floor of the model measured, shows how far the measured
costs are from what its weight reads allow. Last, the model is turned into
one whose MTP head drafts the main model's greedy token (make_drafter) and
the real speculative loop is timed against plain decoding, next to what the
per-forward costs predict (--loop-tokens 0 skips it).
Verify forwards keep per-token DeltaNet states (what the speculative loop does);
a DeltaNet layer's verify time includes forming the state after the first token
(what a rewind after a rejected draft reads; the compiled path forms it only then).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx.core)
import mlx.core as mx

from mlx_qwen3next import active_blas, load_model
from mlx_qwen3next.cache import KVCache
from mlx_qwen3next.kernels.decode import state_after
from mlx_qwen3next.model.decoder import step_context
from slice import build_slice

REAL_LINEAR, REAL_ATTENTION = 36, 12
PATHS = ("compiled", "eager")


def layer_forward(model, cache, snap, tokens: list[int], path: str, costs: dict):
    """One forward of `tokens` after `snap`, timed per layer (into `costs`), then undone."""
    cache.restore(snap)
    cache.keep_steps(len(tokens) > 1)
    ids = mx.array([tokens])
    x = model.model.embed_tokens(ids)
    mx.eval(x)
    if path == "compiled":
        steps = model.compiled_steps()
        step = lambda i, x: steps.layer(i, x, cache, len(tokens) > 1)
    else:
        ctx = step_context(cache, len(tokens), x.dtype)
        step = lambda i, x: model.layers[i](x, cache[i], ctx)
    for i, layer in enumerate(model.layers):
        t = time.perf_counter()
        x = step(i, x)
        mx.eval(x, *layer_state(cache[i]))
        costs["linear" if layer.is_linear else "attention"].append(time.perf_counter() - t)
    t = time.perf_counter()
    mx.eval(model.logits(model.model.norm(x)))
    costs["head"].append(time.perf_counter() - t)
    cache.keep_steps(False)
    cache.restore(snap)


def layer_state(c):
    """What a layer's step leaves in its cache, as a later step or a rewind reads it."""
    if isinstance(c, KVCache):
        return [c.keys, c.values]
    out = [c.conv_state, c.recurrent_state]
    if c.step_terms is not None:
        out.append(state_after(c.step_first, c.step_terms, 1))  # a rewind to the first token
    return out


def timed_round_robin(runs: dict, repeats: int) -> dict:
    """runs: name -> fn(costs) appending seconds to costs[part]. One warm-up round,
    then `repeats` rounds running each in turn; medians in ms per name and part."""
    costs = {name: {} for name in runs}
    for rnd in range(repeats + 1):
        for name, fn in runs.items():
            c = {"linear": [], "attention": [], "head": [], "draft": []}
            fn(c)
            if rnd:
                for part, v in c.items():
                    costs[name].setdefault(part, []).extend(v)
    return {name: {part: statistics.median(v) * 1e3 for part, v in parts.items() if v}
            for name, parts in costs.items()}


def draft_run(model, hidden, path: str, T: int = 1):
    """An MTP draft step on T tokens (the first step of a round takes the tokens the last
    verify accepted, and one more), logits of the last one only, as drafting asks."""
    cache = model.mtp.make_cache()
    model.mtp_forward(hidden, mx.array([[1] * hidden.shape[1]]), cache)
    snap = cache.mark()

    def step(costs):
        model.compile_steps = path == "compiled"
        cache.restore(snap)
        t = time.perf_counter()
        logits, out = model.mtp_forward(hidden[:, -T:], mx.array([[5] * T]), cache,
                                        last_only=True)
        mx.eval(logits, out)
        costs["draft"].append(time.perf_counter() - t)
        model.compile_steps = True

    return step


def unique_experts(tokens: int, experts: int = 512, top_k: int = 10) -> float:
    """Expected distinct experts that `tokens` tokens route to (independent top-k picks)."""
    return experts * (1 - (1 - top_k / experts) ** tokens)


def bytes_model(tokens: int, bits: float = 4.5, draft: bool = False, experts: int = 512,
                layers=(REAL_LINEAR, REAL_ATTENTION)) -> float:
    """Weight bytes one forward of the real 4-bit model reads (4.5 bits: 4-bit + g64 scales).

    Per layer: dense projections + shared expert + router, and the distinct routed
    experts the tokens pick; plus lm_head. A draft step is one attention + MoE layer,
    the fc and lm_head. Memory-bound decode time is proportional to this. `bits`,
    `experts` and `layers` (DeltaNet, attention) describe other models (the slice).
    """
    H, expert, router = 2048, 3 * 2048 * 512, experts * 2048
    deltanet = 12288 * H + 64 * H + H * 4096 + expert + router  # qkvz, ba, out, shared, router
    attention = 8192 * H + 2 * 512 * H + H * 4096 + expert + router
    routed = unique_experts(tokens, experts) * expert
    lm_head = 151936 * H
    if draft:
        return (attention + routed + 2 * H * H + lm_head) * bits / 8
    n_linear, n_attention = layers
    return (n_linear * (deltanet + routed) + n_attention * (attention + routed)
            + lm_head) * bits / 8


def speedup(single, verify, draft, k: int, a: float) -> float:
    """Expected speed-up of k drafts per round at i.i.d. acceptance a. A round is the verify
    of k + 1 tokens and k draft steps, the first of which takes the m tokens the last round
    yielded (P(m = j) = a^(j-1) (1 - a) for j <= k, a^k for j = k + 1), the others one.
    verify[k]: cost of the k + 1-token verify; draft[T]: cost of a T-token draft step."""
    p = [a ** (j - 1) * (1 - a) for j in range(1, k + 1)] + [a ** k]
    first = sum(pj * draft[j] for j, pj in enumerate(p, start=1))
    tokens = sum(j * pj for j, pj in enumerate(p, start=1))
    return tokens * single / (verify[k] + first + (k - 1) * draft[1])


def speedup_rows(single, verify, draft):
    return [f"| {k} | " + " | ".join(f"{speedup(single, verify, draft, k, a):.2f}x"
                                     for a in (0.6, 0.8, 0.9)) + " |" for k in range(1, 5)]


def project(c, layers=None):
    """ms of a forward: the real 48 layers, or the given ones (the slice's own)."""
    if layers is None:
        n_linear, n_attention = REAL_LINEAR, REAL_ATTENTION
    else:
        n_linear = sum(layer.is_linear for layer in layers)
        n_attention = len(layers) - n_linear
    return n_linear * c["linear"] + n_attention * c["attention"] + c["head"]


def make_drafter(model):
    """Make the loaded model one whose MTP head drafts the main model's greedy token (the
    construction of tests/test_speculative.py): every main layer's output projections are
    zeroed, so hidden = norm(embed(token)) and the next token depends on the current one only;
    the MTP head's fc passes the normalised embedding of the token it is given and its layer
    adds nothing, so it computes that same map one token ahead. Every weight is still read:
    the cost of a forward is unchanged, and the routing stays random."""
    zero = lambda m: setattr(m, "weight", mx.zeros_like(m.weight))
    for layer in model.layers:
        mixer = layer.linear_attn if layer.is_linear else layer.self_attn
        zero(mixer.out_proj if layer.is_linear else mixer.o_proj)
        zero(layer.mlp.switch_mlp.down_proj)
        zero(layer.mlp.shared_expert.down_proj)
    mtp, H = model.mtp, model.config.hidden_size
    zero(mtp.layers[0].self_attn.o_proj)
    zero(mtp.layers[0].mlp.switch_mlp.down_proj)
    zero(mtp.layers[0].mlp.shared_expert.down_proj)
    mtp.fc.weight = mx.concatenate([mx.eye(H), mx.zeros((H, H))], axis=1)
    mtp.pre_fc_norm_embedding.weight = mx.ones((H,))
    mtp.norm.weight = model.model.norm.weight
    mx.eval(model.parameters())


def decode_loop_rows(model, context: int, tokens: int, predicted: dict) -> list[str]:
    """Greedy decoding of `tokens` tokens, plain and with MTP k = 1..4, on the drafting
    model: tok/s after the prompt, acceptance, and the speed-up against the one predicted
    from the per-forward costs (`predicted[k]`, at the measured acceptance)."""
    from mlx_qwen3next.generation import token_stream
    from mlx_qwen3next.generation.speculative import MTPStats, speculative_stream

    prompt = mx.random.randint(0, 1000, (context,), key=mx.random.key(1)).tolist()
    greedy = lambda logits: mx.argmax(logits, axis=-1)

    def timed(stream):
        stamps, out = [], []
        for tok, *_ in stream:
            stamps.append(time.perf_counter())
            out.append(int(tok))
        return (len(out) - 1) / (stamps[-1] - stamps[0]), out

    def plain():
        return token_stream(model, mx.array(prompt), model.make_cache(), greedy,
                            max_tokens=tokens + 1)

    timed(itertools.islice(plain(), 3))  # warm-up
    base, ref = timed(plain())
    rows = [f"| plain | | | {base:.2f} | 1.00x | |"]
    for k in range(1, 5):
        stats = MTPStats()
        speed, out = timed(speculative_stream(model, prompt, model.make_cache(),
                                              draft_tokens=k, max_tokens=tokens + 1,
                                              stats=stats))
        same = "" if out == ref else " (tokens differ!)"
        a = stats.acceptance
        rows.append(f"| k = {k} | {a:.2f} | {stats.tokens_per_forward:.2f} | {speed:.2f}{same} "
                    f"| {speed / base:.2f}x | {predicted[k](a):.2f}x |")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--loop-tokens", type=int, default=32,
                    help="tokens of the measured decoding loop (0: skip it)")
    ap.add_argument("--slice", type=Path, default=None,
                    help="an existing slice folder (bench/slice.py) instead of building one")
    ap.add_argument("--model", type=Path, default=None,
                    help="a trained model (e.g. the shipped tiny one): time MTP decoding "
                         "of its held-out prompts instead (bench/mtp_model.py)")
    args = ap.parse_args()
    if args.model is not None:
        from mtp_model import run

        return run(args.model, repeats=args.repeats)
    if args.slice is not None:
        model = load_model(args.slice)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = build_slice(tmp, layers=4, experts=args.experts, mtp=True)
            model = load_model(path)
    experts = model.config.num_experts
    cache = model.make_cache()
    prompt = mx.random.randint(0, 1000, (1, args.context), key=mx.random.key(0))
    hidden = model.hidden(prompt, cache)
    mx.eval(hidden)
    snap = cache.mark()

    runs = {}
    for T in range(1, 6):
        for path in PATHS:
            tokens = [7] + [11 + i for i in range(T - 1)]
            runs[(T, path)] = (lambda tokens, path: lambda c: layer_forward(
                model, cache, snap, tokens, path, c))(tokens, path)
    for T in range(1, 6):
        for path in PATHS:
            runs[("draft", path, T)] = draft_run(model, hidden, path, T)
    res = timed_round_robin(runs, args.repeats)

    t1, s1 = project(res[(1, "compiled")]), project(res[(1, "compiled")], model.layers)
    print(f"# MTP speculative decoding, real dims, {experts} experts, float32, "
          f"context {args.context}, BLAS: {active_blas()}\n")
    print(f"Medians of {args.repeats} rounds, configurations interleaved. 'x one token': "
          "against the compiled one-token forward (what decoding runs), on the slice itself "
          f"({len(model.layers)} layers + head) and projected to 48 layers.\n")
    print("| tokens in forward | path | DeltaNet layer ms | attention layer ms | head ms "
          "| slice forward ms | x one token | 48-layer forward ms | x one token |")
    print("|---|---|---|---|---|---|---|---|---|")
    verify = {path: {} for path in PATHS}
    for T in range(1, 6):
        for path in PATHS:
            c = res[(T, path)]
            total, on_slice = project(c), project(c, model.layers)
            verify[path][T - 1] = total
            label = "1" if T == 1 else f"{T} (verify k={T - 1})"
            print(f"| {label} | {path} | {c['linear']:.2f} | {c['attention']:.2f} "
                  f"| {c['head']:.2f} | {on_slice:.1f} | {on_slice / s1:.2f} "
                  f"| {total:.1f} | {total / t1:.2f} |")
    n_linear = sum(layer.is_linear for layer in model.layers)
    floor = lambda T, layers: bytes_model(T, 32, experts=experts, layers=layers)
    for name, layers in (("slice", (n_linear, len(model.layers) - n_linear)),
                         ("48 layers", (REAL_LINEAR, REAL_ATTENTION))):
        print(f"\nWeight bytes read (this float32 model, distinct experts), {name}: one token "
              f"{floor(1, layers) / 1e9:.2f} GB; verify k=1..4 "
              + ", ".join(f"{floor(T, layers) / floor(1, layers):.2f}x" for T in range(2, 6)))
    draft = {path: {T: res[("draft", path, T)]["draft"] for T in range(1, 6)} for path in PATHS}
    print("\nMTP draft step on 1..5 tokens (the first of a round takes the tokens the last "
          "verify yielded): " + "; ".join(
              f"{path} " + ", ".join(f"{d:.1f}" for d in draft[path].values())
              + f" ms ({draft[path][1] / t1:.3f} of a 48-layer forward at one token)"
              for path in PATHS) + "\n")
    for path in PATHS:
        print(f"Projected from the measured CPU costs (float32), verify and draft on the "
              f"{path} path, one-token decode compiled:\n")
        print("| k | speed-up at acceptance 0.6 | 0.8 | 0.9 |")
        print("|---|---|---|---|")
        print("\n".join(speedup_rows(t1, verify[path], draft[path])) + "\n")
    b48 = (REAL_LINEAR, REAL_ATTENTION)
    floor_draft = lambda T: bytes_model(T, 32, draft=True, experts=experts)
    print(f"Bytes floor of this float32 model at 48 layers ({experts} experts; time proportional "
          f"to the weight bytes read, a one-token draft step {floor_draft(1) / floor(1, b48):.3f}x "
          "one token), for comparison with the measured projection above:\n")
    print("| k | speed-up at acceptance 0.6 | 0.8 | 0.9 |")
    print("|---|---|---|---|")
    print("\n".join(speedup_rows(floor(1, b48), {k: floor(k + 1, b48) for k in range(1, 5)},
                                {T: floor_draft(T) for T in range(1, 6)})) + "\n")
    b1 = bytes_model(1)
    bverify = {k: bytes_model(k + 1) for k in range(1, 5)}
    print(f"Bandwidth model of the real 4-bit model (512 experts, memory-bound decode): "
          f"one token reads {b1 / 1e9:.2f} GB; verify k=1..4 reads "
          + ", ".join(f"{bverify[k] / b1:.2f}x" for k in range(1, 5))
          + f"; a draft step {bytes_model(1, draft=True) / b1:.3f}x.\n")
    print("| k | speed-up at acceptance 0.6 | 0.8 | 0.9 |")
    print("|---|---|---|---|")
    print("\n".join(speedup_rows(b1, bverify,
                                {T: bytes_model(T, draft=True) for T in range(1, 6)})))
    if args.loop_tokens and model.has_mtp:
        slice_verify = {k: project(res[(k + 1, "compiled")], model.layers) for k in range(1, 5)}
        predicted = {k: (lambda k: lambda a: speedup(s1, slice_verify, draft["compiled"], k, a))(k)
                     for k in range(1, 5)}
        make_drafter(model)
        print(f"\nMeasured decoding loop on this slice, greedy, {args.loop_tokens} tokens after "
              f"a {args.context}-token prompt, with the MTP head made to draft the main model's "
              "greedy token (make_drafter: same weights read, acceptance ~1). 'predicted': "
              "the speed-up the per-forward costs above give on this slice at the measured "
              "acceptance.\n")
        print("| decoding | acceptance | tokens per forward | tok/s | speed-up | predicted |")
        print("|---|---|---|---|---|---|")
        print("\n".join(decode_loop_rows(model, args.context, args.loop_tokens, predicted)))


if __name__ == "__main__":
    main()
