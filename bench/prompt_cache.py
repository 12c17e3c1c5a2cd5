"""Prompt cache: a follow-up turn's time to first token, cold against warm, ours and mlx-lm's.

Scenario, at each context size N: turn 1 is N prompt tokens and a 16-token reply; the
follow-up turn is that conversation plus 32 new tokens. Cold runs the follow-up from an
empty cache. Warm has the cache turn 1 left: ours through a PromptCache (which finds the
prefix by itself), mlx-lm's through its generate_step with the prompt_cache that turn 1
filled, fed only the tokens past what that cache holds (the best mlx-lm can do: its
DeltaNet cache cannot be trimmed, so only an exact extension reuses it). Also: the bytes
the prompt cache holds, and a disk cache's load time against the prefill it saves.

    python bench/prompt_cache.py                      # 4-layer real-dimension slice and tiny model
    python bench/prompt_cache.py --tiny-only --sizes 1024 8192 32768
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import mlx_qwen3next  # noqa: E402,F401  (OpenBLAS before mlx.core)
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from mlx_qwen3next import load_model, stream_generate  # noqa: E402
from mlx_qwen3next.checkpoints.tokenizer import load_tokenizer  # noqa: E402
from mlx_qwen3next.generation import prefill  # noqa: E402
from mlx_qwen3next.generation.cache_file import load_prompt_cache, save_prompt_cache  # noqa: E402
from mlx_qwen3next.generation.prompt_cache import PromptCache  # noqa: E402
from mlx_qwen3next.testing.tiny import tiny_config, write_checkpoint  # noqa: E402
from mlx_qwen3next.testing.tokenizer_files import write_tokenizer  # noqa: E402

REPLY, NEW = 16, 32


def ids(n, seed):
    return np.random.default_rng(seed).integers(10, 400, n).tolist()


def first_token(model, tok, prompt, **kw):
    """(seconds to the first token, the token)."""
    t = time.perf_counter()
    for r in stream_generate(model, tok, prompt, max_tokens=1, temperature=0.0, mtp=False,
                             **kw):
        return time.perf_counter() - t, r.token


def ours(model, tok, n):
    pc = PromptCache(max_bytes=1 << 40)
    turn1 = ids(n, 0)
    reply = [r.token for r in stream_generate(model, tok, turn1, max_tokens=REPLY,
                                              temperature=0.0, mtp=False, prompt_cache=pc)]
    follow = turn1 + reply + ids(NEW, 1)
    cold, tc = first_token(model, tok, follow)
    warm, tw = first_token(model, tok, follow, prompt_cache=pc)
    assert tc == tw, "warm and cold disagree"
    entry = max(pc.entries, key=lambda e: len(e.tokens))
    kv = sum(a.nbytes for s in entry.layers if s for a in s)
    states = entry.nbytes - kv
    disk = disk_times(model, turn1)
    return dict(cold=cold, warm=warm, kv=kv, states=states, points=len(entry.points),
                turn1=turn1, reply=reply, follow=follow, **disk)


def disk_times(model, prompt):
    cache = model.make_cache()
    t = time.perf_counter()
    prefill(model, cache, prompt)
    prefill_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as d:
        file = save_prompt_cache(Path(d) / "c.safetensors", cache, prompt, model)
        size = file.stat().st_size
        t = time.perf_counter()
        loaded, _, _ = load_prompt_cache(file, model)
        mx.eval(loaded.arrays())
        load_s = time.perf_counter() - t
    return dict(prefill_s=prefill_s, load_s=load_s, file_bytes=size)


def theirs(path, ours_model, turn1, reply, follow):
    """mlx-lm: cold and warm time to first token for the same follow-up."""
    from mlx_lm.generate import generate_step

    from runners import MlxLm

    lm = MlxLm(path, share=type("S", (), {"model": ours_model})())
    model = lm.model

    def first(prompt, cache):
        t = time.perf_counter()
        for token, _ in generate_step(mx.array(prompt), model, prompt_cache=cache,
                                      max_tokens=1):
            return time.perf_counter() - t, int(token)

    cold, _ = first(follow, model.make_cache())
    cache = model.make_cache()
    for _ in generate_step(mx.array(turn1), model, prompt_cache=cache, max_tokens=REPLY):
        pass
    held = max(getattr(c, "offset", 0) for c in cache)
    warm, _ = first(follow[held:], cache)
    return dict(cold=cold, warm=warm)


def tiny_model(workdir: Path):
    cfg = tiny_config()
    path = write_checkpoint(workdir / "tiny", cfg, dtype="float32")
    return path


def with_tokenizer(path: Path, workdir: Path):
    """A tokenizer for a checkpoint folder that has none (the bench slice): the tiny one;
    the prompts are token ids, so only its eos ids and detokenizer are used."""
    if not (path / "tokenizer.json").is_file():
        tdir = workdir / "tok"
        tdir.mkdir(exist_ok=True)
        write_tokenizer(tdir)
        return tdir
    return path


def fmt(x):
    return f"{x * 1e3:.0f} ms" if x < 10 else f"{x:.1f} s"


def report(name, n, o, m):
    row = (f"| {name} | {n:,} | {fmt(o['cold'])} | {fmt(o['warm'])} | "
           f"{o['cold'] / o['warm']:.0f}x | ")
    row += (f"{fmt(m['cold'])} | {fmt(m['warm'])} | {m['cold'] / m['warm']:.1f}x | "
            f"{m['warm'] / o['warm']:.1f}x | " if m else "skipped | skipped | | | ")
    row += (f"{o['kv'] / 1e6:.1f} MB + {o['states'] / 1e6:.1f} MB ({o['points']} points) | "
            f"{fmt(o['prefill_s'])} vs {fmt(o['load_s'])} ({o['prefill_s'] / o['load_s']:.0f}x) |")
    print(row, flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slice", type=Path, default=Path(tempfile.gettempdir()) / "qwen3next_e2e"
                   / "slice4", help="the 4-layer real-dimension slice (bench/slice.py)")
    p.add_argument("--slice-sizes", type=int, nargs="+", default=[1024, 8192])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 8192, 32768],
                   help="context sizes on the tiny model")
    p.add_argument("--mlxlm-max", type=int, default=32768,
                   help="largest context mlx-lm runs on the tiny model")
    p.add_argument("--slice-mlxlm-max", type=int, default=1024,
                   help="largest context mlx-lm runs on the slice (its prefill there is "
                        "~18 tok/s on this CPU)")
    p.add_argument("--tiny-only", action="store_true")
    args = p.parse_args(argv)
    print("| model | context | ours cold | ours warm | warm speed-up | mlx-lm cold | "
          "mlx-lm warm | mlx-lm speed-up | mlx-lm warm / ours warm | checkpoint bytes "
          "(KV + DeltaNet) | prefill vs disk load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        runs = [("tiny", tiny_model(work), args.sizes, args.mlxlm_max)]
        if not args.tiny_only:
            if not (args.slice / "config.json").is_file():
                from slice import build_slice

                build_slice(args.slice, layers=4)
            runs.insert(0, ("4-layer slice", args.slice, args.slice_sizes,
                            args.slice_mlxlm_max))
        for name, path, sizes, mlxlm_max in runs:
            model = load_model(path, mtp=False)
            tok = load_tokenizer(with_tokenizer(path, work), model.config)
            for n in sizes:
                o = ours(model, tok, n)
                m = theirs(path, model, o["turn1"], o["reply"], o["follow"]) \
                    if n <= mlxlm_max else None
                report(name, n, o, m)
            del model


if __name__ == "__main__":
    main()
