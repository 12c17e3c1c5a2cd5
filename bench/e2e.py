"""End-to-end speed against mlx-lm's own qwen3_next, on a slice with the real dimensions.

Builds (once, reused from --workdir) a float32 random slice of Qwen3-Next-80B-A3B
with the exact real layer and vocabulary sizes, 64 experts and an MTP head
(bench/slice.py), then loads it in ours and in mlx-lm from the very same files,
one model at a time, and measures in one run:

  prefill tok/s   body on every prompt token + lm_head on the last one (what
                  generation needs), fresh cache, after a warm-up call
  decode tok/s    greedy, 32 tokens after a 128-token prompt: argmax, feed back,
                  mx.eval(token, every cache array) per token; the same loop for
                  both; plus mlx-lm's generate_step and our MTP speculative loop,
                  with the slice's random head (acceptance ~0) and then with the
                  head made to draft the main model's greedy token (~1)
  peak memory     mx.get_peak_memory, reset before each phase (weights included)
  primitives      nodes of one decode step's graph (mx.export_to_dot of the
                  logits and every cache array after one step), by type; and
                  as a GPU would run it: the plain modules (the CPU swaps undone)
                  and each mx.fast op one node (bench/measures.py; bench/graph.py
                  counts the same with 4-bit weights too)
  roofline        bytes a decode step must read (active weights, lm_head, the
                  embedding row, DeltaNet state read + write, KV cache) x tok/s,
                  next to the measured bandwidth of a 1 GiB copy and a 1 GiB gemv

    python bench/e2e.py                       # 4 and 8 layers, full table
    python bench/e2e.py --quick               # 4 layers, prefill 128/512, 16 tokens
    python bench/e2e.py --layers 4 --write    # also write bench/RESULTS.md "End-to-end"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import mlx_qwen3next  # noqa: E402,F401  (OpenBLAS before mlx.core, for both sides)
import mlx.core as mx  # noqa: E402

from e2e_report import table, prims_table, write_results  # noqa: E402
from measures import bandwidth, count_primitives, decode_bytes  # noqa: E402
from runners import MlxLm, Ours  # noqa: E402
from mtp import make_drafter  # noqa: E402
from slice import build_slice, link_slice, slice_config  # noqa: E402

GiB = 1 << 30


# --------------------------------------------------------------------------- slice


def ensure_slice(workdir: Path, layers: list[int], rebuild: bool) -> dict[int, Path]:
    """The deepest slice is built once; shallower ones are hard links into it."""
    deepest = max(layers)
    src = workdir / f"slice{deepest}"
    stamp = src / "stamp.json"
    want = {"layers": deepest, "config": slice_config(deepest), "version": 1}
    if rebuild or not stamp.is_file() or json.loads(stamp.read_text()) != want:
        t = time.perf_counter()
        print(f"building the {deepest}-layer slice in {src} ...", file=sys.stderr, flush=True)
        build_slice(src, layers=deepest)
        stamp.write_text(json.dumps(want))
        print(f"  built in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    paths = {deepest: src}
    for n in layers:
        if n != deepest:
            paths[n] = link_slice(src, workdir / f"slice{n}", n)
    return paths


# --------------------------------------------------------------------------- measures


def prompt_ids(n: int, seed: int = 0) -> mx.array:
    return mx.random.randint(0, 151936, (1, n), key=mx.random.key(seed)).astype(mx.int32)


def time_prefill(r, n: int):
    """(seconds, peak bytes above what was live before, last logits, cache)."""
    ids = prompt_ids(n)
    mx.eval(ids)
    cache = r.make_cache()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    t = time.perf_counter()
    logits = r.prefill(ids, cache)
    mx.eval(logits, r.cache_arrays(cache))
    dt = time.perf_counter() - t
    return dt, mx.get_peak_memory() - base, logits, cache


class Decoder:
    """One side's greedy decode state: the same loop for both sides."""

    def __init__(self, r, prompt: int):
        self.r = r
        _, _, logits, self.cache = time_prefill(r, prompt)
        self.tok = mx.argmax(logits[:, -1], axis=-1, keepdims=True)
        self.tokens = [self.tok.item()]
        self.times, self.peak = [], 0

    def steps(self, n: int, timed: bool = True):
        base = mx.get_active_memory()
        mx.reset_peak_memory()
        for _ in range(n):
            t = time.perf_counter()
            self.tok = mx.argmax(self.r.step(self.tok, self.cache)[:, -1], axis=-1,
                                 keepdims=True)
            mx.eval(self.tok, self.r.cache_arrays(self.cache))
            if timed:
                self.times.append(time.perf_counter() - t)
            self.tokens.append(self.tok.item())
        self.peak = max(self.peak, mx.get_peak_memory() - base)


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])


def mlxlm_generate_step(r, prompt: int, tokens: int):
    """mlx-lm's own generate_step (async eval pipeline), greedy: decode tok/s."""
    from mlx_lm.generate import generate_step

    ids = prompt_ids(prompt)[0]
    stamps, out = [], []
    for tok, _ in generate_step(ids, r.model, max_tokens=tokens + 3):
        stamps.append(time.perf_counter())
        out.append(int(tok))
    gaps = [b - a for a, b in zip(stamps[2:], stamps[3:])]  # after prefill + 2 warm steps
    return 1.0 / median(gaps), out


def mtp_decode(ours, prompt: int, tokens: int, draft_tokens: int = 1):
    """Our MTP speculative loop, greedy: tok/s, acceptance, round time."""
    try:
        from mlx_qwen3next.generation.speculative import MTPStats, speculative_stream
    except ImportError as e:
        return {"pending": f"mlx_qwen3next.generation.speculative not importable ({e})"}
    ids = prompt_ids(prompt)[0].tolist()
    for _ in speculative_stream(ours.model, ids[:16], ours.make_cache(), max_tokens=4):
        pass  # warm-up
    stats = MTPStats()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    stamps, out = [], []
    for tok, *_ in speculative_stream(ours.model, ids, ours.make_cache(),
                                     draft_tokens=draft_tokens,
                                     max_tokens=tokens + 1, stats=stats):
        stamps.append(time.perf_counter())
        out.append(tok)
    dt = stamps[-1] - stamps[0]  # after the prefill's token
    rounds = max(stats.forwards - 1, 1)
    return {"tok_s": tokens / dt, "acceptance": stats.acceptance, "round_s": dt / rounds,
            "peak": mx.get_peak_memory() - base, "tokens": out}


def run_pair(path: Path, args) -> dict:
    """Both sides resident on one copy of the weights; every measure interleaved."""
    t = time.perf_counter()
    ours = Ours(path, mtp=not args.no_mtp)
    weights = mx.get_active_memory()
    theirs = MlxLm(path, share=ours)
    unshared = mx.get_active_memory() - weights  # mlx-lm's own copies of what ours joined
    print(f"  loaded in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    sides = {"mlx-lm": theirs, "ours": ours}
    res = {k: {"prefill": {}, "prefill_peak": {}} for k in sides}
    res["weights"], res["unshared"] = weights, unshared
    for r in sides.values():  # warm-up: first-call costs (kernel self-checks, compiles)
        time_prefill(r, 16)
        Decoder(r, 8).steps(2)
    for n in args.prefill:
        for rep in range(args.reps):
            order = list(sides.items())[:: 1 if rep % 2 == 0 else -1]
            for name, r in order:
                if name == "mlx-lm" and (n > args.mlxlm_max_prefill
                                         or (rep and n > args.mlxlm_once_above)):
                    continue
                dt, peak, _, _ = time_prefill(r, n)
                d = res[name]
                d["prefill"][n] = max(d["prefill"].get(n, 0), n / dt)
                d["prefill_peak"][n] = max(d["prefill_peak"].get(n, 0), peak)
                print(f"  [{name}] prefill {n}: {n / dt:.1f} tok/s", file=sys.stderr,
                      flush=True)
    dec = {name: Decoder(r, args.prompt) for name, r in sides.items()}
    for d in dec.values():
        d.steps(2, timed=False)
    block = 8
    for i in range(0, args.tokens, block):
        for name in (list(dec) if (i // block) % 2 == 0 else list(dec)[::-1]):
            dec[name].steps(min(block, args.tokens - i))
    for name, d in dec.items():
        res[name].update(decode=1.0 / median(d.times), decode_mean=len(d.times) / sum(d.times),
                         decode_peak=d.peak, tokens=d.tokens)
        res[name]["prims"] = count_primitives(d.r, d.cache, d.tok)
        with d.r.as_on_metal():
            res[name]["prims_metal"] = count_primitives(d.r, d.cache, d.tok, on_metal=True)
        print(f"  [{name}] decode: {res[name]['decode']:.2f} tok/s", file=sys.stderr)
    del dec
    if not args.no_generate_step:
        res["mlx-lm"]["generate_step"], _ = mlxlm_generate_step(theirs, args.prompt,
                                                                args.tokens)
        print(f"  [mlx-lm] generate_step: {res['mlx-lm']['generate_step']:.2f} tok/s",
              file=sys.stderr)
    if not args.no_mtp:
        res["mtp"] = mtp_decode(ours, args.prompt, args.tokens)
        if "pending" not in res["mtp"]:
            # last, since it changes our weights: a head that drafts the main model's
            # greedy token, every weight still read (bench/mtp.py's make_drafter)
            make_drafter(ours.model)
            res["mtp_drafter"] = mtp_decode(ours, args.prompt, args.tokens)
    theirs.free()
    ours.free()
    return res


def machine() -> dict:
    import mlx_lm

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram": f"{mem / GiB:.0f} GiB",
            "blas": mlx_qwen3next.active_blas(), "mlx": mx.__version__,
            "mlx-lm": mlx_lm.__version__, "ours": mlx_qwen3next.__version__,
            "device": str(mx.default_device())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, nargs="+", default=[4, 8])
    p.add_argument("--prefill", type=int, nargs="+", default=[128, 512, 2048])
    p.add_argument("--tokens", type=int, default=32, help="decode tokens timed")
    p.add_argument("--prompt", type=int, default=16, help="prompt length before decode")
    p.add_argument("--mlxlm-max-prefill", type=int, default=512,
                   help="skip mlx-lm prefill above this length (it is slow); shown as skipped")
    p.add_argument("--mlxlm-once-above", type=int, default=512,
                   help="time mlx-lm's prefill once (not --reps times) above this length")
    p.add_argument("--reps", type=int, default=2, help="interleaved prefill repetitions")
    p.add_argument("--no-mtp", action="store_true")
    p.add_argument("--no-generate-step", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="4 layers, prefill 128 and 512, 16 decode tokens")
    p.add_argument("--workdir", type=Path,
                   default=Path(tempfile.gettempdir()) / "qwen3next_e2e")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--write", action="store_true", help="write bench/RESULTS.md End-to-end")
    args = p.parse_args(argv)
    if args.quick:
        args.layers, args.prefill, args.tokens = [4], [128, 512], 16
    t0 = time.perf_counter()
    info = machine()
    paths = ensure_slice(args.workdir, args.layers, args.rebuild)
    bw = bandwidth()
    out = [f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram']} RAM; "
           f"device {info['device']}; BLAS: {info['blas']}.",
           f"Versions: mlx {info['mlx']}, mlx-lm {info['mlx-lm']}, mlx-qwen3next {info['ours']}.",
           "BANDWIDTH", ""]
    for L in args.layers:
        print(f"{L} layers:", file=sys.stderr, flush=True)
        res = run_pair(paths[L], args)
        bw = bandwidth(bw)
        tab, extra = table(L, res, bw, args)
        out += [f"### {L} layers ({L // 4} x [3 DeltaNet + 1 attention]), 64 experts, "
                f"float32", "", tab, "",
                "Greedy tokens identical on both sides: "
                f"{'yes' if extra['same_tokens'] else 'NO'}.",
                "Goals: " + "; ".join(f"{k}: {v}" for k, v in extra["goals"].items()) + ".",
                "", "Bytes per decode token by part: " + ", ".join(
                    f"{k} {v / 1e6:.0f} MB" for k, v in extra["parts"].items()) + ".",
                "", "<details><summary>primitives per decode step, by type</summary>", "",
                prims_table(res), "", "</details>", ""]
    full = slice_config(48, 512)
    b4 = sum(decode_bytes(full, 128, bytes_per_param=0.5625, gate_bytes=1.0625).values())
    out.append(f"For scale, the full 48-layer, 512-expert model at 4-bit (group 64; gates "
               f"8-bit) reads {b4 / 1e9:.2f} GB per decode token by the same count.")
    out.append(f"\nWall time of this run: {time.perf_counter() - t0:.0f} s.")
    out[2] = (f"Measured bandwidth (best of runs before and after each model): "
              f"{bw['copy']:.1f} GB/s (256 MiB float32 copy, read + write), {bw['gemv']:.1f} "
              f"GB/s (256 MiB float32 gemv, OpenBLAS, read).")
    text = "\n".join(out)
    print(text)
    if args.write:
        cmd = "python bench/e2e.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_results(text, cmd.replace(" --write", ""))


if __name__ == "__main__":
    main()
