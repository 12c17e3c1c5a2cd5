"""The server against mlx_lm.server on the same converted model, in one run: time to first
token and tokens/s with 1 and 4 concurrent clients, and a multi-turn conversation's time
to first token per turn (where our prompt cache keeps the conversation).

    python bench/server.py                    # the demo's tiny model, converted here
    python bench/server.py --model PATH       # any converted checkpoint both can load
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import openai

HERE = Path(__file__).resolve().parent
OURS_NAME = [None]
DOC = "Unified memory lets the GPU read the model's weights where they lie. " * 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, model: Path):
    port = free_port()
    cmd = ([sys.executable, "-m", "mlx_qwen3next.cli", "serve", str(model), "--port", str(port)]
           if kind == "ours" else
           [sys.executable, "-m", "mlx_lm", "server", "--model", str(model), "--port",
            str(port)])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                           max_retries=0, timeout=600)
    name = model.name if kind == "ours" else str(model)  # mlx_lm.server takes the path
    if kind == "ours":
        OURS_NAME[0] = name
    for _ in range(1200):
        try:
            client.chat.completions.create(model=name, max_tokens=1,
                                           messages=[{"role": "user", "content": "up?"}])
            return proc, client, name
        except Exception:  # noqa: BLE001  (not up yet)
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} server exited")
            time.sleep(0.1)
    raise RuntimeError(f"{kind} server did not start")


EXTRA: dict = {}  # per-request extensions sent to our server (--mtp)


def one(client, model_name, messages, max_tokens):
    """(seconds to the first content, generated tokens per second after it, the text)."""
    t0 = time.perf_counter()
    first, pieces = None, []
    extra = EXTRA if model_name == OURS_NAME[0] else {}
    for chunk in client.chat.completions.create(model=model_name, messages=messages,
                                                max_tokens=max_tokens, temperature=0,
                                                stream=True, extra_body=extra):
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            pieces.append(chunk.choices[0].delta.content)
    end = time.perf_counter()
    n = len(pieces)
    return first - t0, (n - 1) / max(end - first, 1e-9), "".join(pieces)


def concurrent(client, model_name, clients, requests, max_tokens):
    ttft, rates = [], []
    t0 = time.perf_counter()

    def run(i):
        for j in range(requests):
            messages = [{"role": "user", "content": f"Question {i}.{j}: tell me a story."}]
            a, b, _ = one(client, model_name, messages, max_tokens)
            ttft.append(a)
            rates.append(b)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return statistics.median(ttft), statistics.median(rates), \
        clients * requests * max_tokens / wall


def turns(client, model_name, n, max_tokens):
    messages = [{"role": "user", "content": DOC + "\nSummarise this."}]
    out = []
    for i in range(n):
        ttft, _, text = one(client, model_name, messages, max_tokens)
        out.append(ttft)
        messages += [{"role": "assistant", "content": text},
                     {"role": "user", "content": f"Follow-up question {i}?"}]
    return out


def demo_model(work: Path) -> Path:
    from mlx_qwen3next.testing.demo import build

    _, result = build(work, work / "tiny-4bit")
    return result.path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--requests", type=int, default=4, help="per client")
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--mtp", action="store_true",
                   help="our MTP speculative decoding on (mlx-lm has none; off by default, "
                        "so both sides decode alike)")
    args = p.parse_args(argv)
    EXTRA["mtp"] = args.mtp
    with tempfile.TemporaryDirectory() as d:
        model = args.model or demo_model(Path(d))
        res = {}
        for kind in ("ours", "mlx-lm"):
            proc, client, name = start(kind, model)
            try:
                one(client, name, [{"role": "user", "content": "warm up"}], 8)
                res[kind] = {"1": concurrent(client, name, 1, args.requests, args.max_tokens),
                             "4": concurrent(client, name, 4, args.requests, args.max_tokens),
                             "turns": turns(client, name, args.turns, 16)}
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    o, m = res["ours"], res["mlx-lm"]
    print(f"Model: {model.name}; {args.max_tokens} tokens per reply, greedy, streamed; "
          f"our MTP {'on' if args.mtp else 'off'}.\n")
    print("| measure | ours | mlx_lm.server | ours / mlx-lm |")
    print("|---|---|---|---|")
    for c in ("1", "4"):
        row = [("time to first token (median)", 0, "ms", 1e3, True),
               ("tokens/s per stream (median)", 1, "tok/s", 1, False),
               ("tokens/s, all streams together", 2, "tok/s", 1, False)]
        for label, i, unit, scale, lower in row:
            a, b = o[c][i] * scale, m[c][i] * scale
            print(f"| {c} client{'s' if c != '1' else ''}: {label} | {a:.1f} {unit} | "
                  f"{b:.1f} {unit} | {a / b:.2f}x |")
    for i, (a, b) in enumerate(zip(o["turns"], m["turns"])):
        print(f"| multi-turn, turn {i + 1}: time to first token | {a * 1e3:.0f} ms | "
              f"{b * 1e3:.0f} ms | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
