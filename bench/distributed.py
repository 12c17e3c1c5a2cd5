"""The model split across ranks: 1 process against 2 ranks (mlx.launch, ring) on this machine.

On the 4-layer slice with the real dimensions (bench/slice.py, built once in --workdir,
shared with bench/e2e.py), each side runs as its own process(es) and measures:

  prefill tok/s   a fresh cache, the prompt through prefill() and the last position's
                  logits (what generation needs), after a warm-up
  decode tok/s    greedy, model(token, cache) -> argmax -> feed back, median step
  weights, peak   each rank's bytes of weights held and mx.get_peak_memory
  send/recv       one hidden state [1, 1, 2048] from rank 0 to rank 1 and back (a ping-pong),
                  the time per one-way message

The same worker code runs in both sides, the split model through the PipelineModel the
CLI uses. Loopback on one machine measures the pipeline's overhead (both ranks share the
cores); across machines the link is what Thunderbolt / Ethernet gives.

    python bench/distributed.py                       # the 4-layer real-dimension slice
    python bench/distributed.py --tiny --prefill 64 --tokens 8   # a quick check it runs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import mlx_qwen3next  # noqa: E402,F401  (OpenBLAS before mlx.core)
import mlx.core as mx  # noqa: E402

TINY = dict(vocab_size=512, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
            head_dim=32, linear_key_head_dim=16, linear_value_head_dim=16,
            linear_num_key_heads=2, linear_num_value_heads=4, moe_intermediate_size=32,
            shared_expert_intermediate_size=48, num_experts_per_tok=2)


# --------------------------------------------------------------------------- worker


def load(path: Path, link):
    from mlx_qwen3next import load_model
    from mlx_qwen3next.distributed import load_stage

    if link is None:
        return load_model(path, mtp=False)
    return load_stage(path, link, "even", mtp=False)


def prefill_tps(model, n: int, vocab: int) -> float:
    from mlx_qwen3next.generation.prefill import prefill

    ids = mx.random.randint(0, vocab, (n,), key=mx.random.key(0)).astype(mx.int32)
    cache = model.make_cache()
    t = time.perf_counter()
    prefill(model, cache, ids[:-1])
    logits = model(ids[None, -1:], cache)
    mx.eval(logits)
    return n / (time.perf_counter() - t)


def decode_tps(model, tokens: int, prompt: int = 16) -> float:
    cache = model.make_cache()
    tok = mx.argmax(model(mx.arange(prompt, dtype=mx.int32)[None], cache)[:, -1], axis=-1)
    times = []
    for _ in range(tokens):
        t = time.perf_counter()
        tok = mx.argmax(model(tok[:, None], cache)[:, -1], axis=-1)
        mx.eval(tok, cache.arrays())
        times.append(time.perf_counter() - t)
    return 1.0 / statistics.median(times)


def send_recv_seconds(link, hidden: int, reps: int = 200) -> float:
    """One-way time of a [1, 1, hidden] message: rank 0 <-> 1 ping-pong, halved."""
    x = mx.zeros((1, 1, hidden), mx.float32)
    mx.eval(x)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        if link.rank == 0:
            link.send(x, 1)
            x = link.recv(x.shape, x.dtype, 1)
        elif link.rank == 1:
            x = link.recv(x.shape, x.dtype, 0)
            link.send(x, 0)
        times.append(time.perf_counter() - t)
    return statistics.median(times) / 2


def worker(args):
    from mlx.utils import tree_flatten

    from mlx_qwen3next.distributed import gather_reports, init

    link = init()
    model = load(args.path, link)
    vocab = model.config.vocab_size
    prefill_tps(model, 16, vocab)  # warm-up
    decode_tps(model, 2)
    res = {"ranks": 1 if link is None else link.size,
           "prefill": {n: max(prefill_tps(model, n, vocab) for _ in range(args.reps))
                       for n in args.prefill},
           "decode": decode_tps(model, args.tokens)}
    if link is None:
        res["per_rank"] = [{"rank": 0, "layers": [0, len(model.layers)],
                            "weight_bytes": sum(v.nbytes for _, v in
                                                tree_flatten(model.parameters())),
                            "peak_memory": mx.get_peak_memory()}]
    else:
        res["send_recv_s"] = send_recv_seconds(link, model.config.hidden_size)
        res["per_rank"] = gather_reports(model)
    if link is None or link.rank == 0:
        print("RESULT " + json.dumps(res), flush=True)


# --------------------------------------------------------------------------- driver


def ensure_model(args) -> Path:
    if args.path is not None:
        return args.path
    if args.tiny:
        from slice import build_slice

        path = Path(tempfile.mkdtemp()) / "tiny-slice"
        return build_slice(path, layers=4, experts=8, mtp=False, **TINY)
    from e2e import ensure_slice

    return ensure_slice(args.workdir, [4], args.rebuild)[4]


def run_side(path: Path, ranks: int, args) -> dict:
    me = [sys.executable, str(Path(__file__).resolve()), "--worker", "--path", str(path),
          "--tokens", str(args.tokens), "--reps", str(args.reps), "--prefill",
          *map(str, args.prefill)]
    if ranks > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        me = ["mlx.launch", "--backend", "ring", "-n", str(ranks), "--hosts", "127.0.0.1",
              "--starting-port", str(port), "--"] + me
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_RANK")}
    got = subprocess.run(me, capture_output=True, text=True, env=env)
    lines = [ln for ln in got.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        sys.exit(f"the {ranks}-rank side failed:\n{got.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def table(one: dict, two: dict) -> str:
    rows = ["| measure | 1 process | 2 ranks | 2 ranks / 1 |", "|---|---|---|---|"]
    for n in one["prefill"]:
        a, b = one["prefill"][n], two["prefill"][n]
        rows.append(f"| prefill {n} tok/s | {a:.1f} | {b:.1f} | {b / a:.2f}x |")
    a, b = one["decode"], two["decode"]
    rows.append(f"| decode tok/s | {a:.2f} | {b:.2f} | {b / a:.2f}x |")
    whole = one["per_rank"][0]
    for r in two["per_rank"]:
        rows.append(f"| rank {r['rank']} (layers {r['layers'][0]}-{r['layers'][1] - 1}) "
                    f"weights MB | {whole['weight_bytes'] / 1e6:.0f} | "
                    f"{r['weight_bytes'] / 1e6:.0f} | "
                    f"{r['weight_bytes'] / whole['weight_bytes']:.2f}x |")
        rows.append(f"| rank {r['rank']} peak memory MB | {whole['peak_memory'] / 1e6:.0f} | "
                    f"{r['peak_memory'] / 1e6:.0f} | "
                    f"{r['peak_memory'] / whole['peak_memory']:.2f}x |")
    rows.append(f"| send/recv of one hidden state [1, 1, H] | | "
                f"{two['send_recv_s'] * 1e6:.0f} us | |")
    return "\n".join(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prefill", type=int, nargs="+", default=[128, 512])
    p.add_argument("--tokens", type=int, default=16, help="decode tokens timed")
    p.add_argument("--reps", type=int, default=2, help="prefill repetitions (best kept)")
    p.add_argument("--tiny", action="store_true", help="tiny dimensions: check that it runs")
    p.add_argument("--path", type=Path, help="a checkpoint instead of the slice")
    p.add_argument("--workdir", type=Path,
                   default=Path(os.environ.get("QWEN3NEXT_BENCH_DIR", "/tmp/qwen3next-bench")))
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    path = ensure_model(args)
    print(f"model: {path}", file=sys.stderr, flush=True)
    try:
        one = run_side(path, 1, args)
        two = run_side(path, 2, args)
    finally:
        if args.tiny and args.path is None:
            shutil.rmtree(path.parent, ignore_errors=True)
    print(table(one, two))


if __name__ == "__main__":
    main()
