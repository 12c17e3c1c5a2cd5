"""Held-out accuracy by greedy decoding, and MTP draft acceptance, using the model directly.

Prompts are the corpus's held-out items (training/corpus.py held_out_eval) rendered
with the chat template and a generation prompt, decoded greedily in left-padded
batches on the model's own hybrid cache, stopped at `<|im_end|>` / `<|endoftext|>`.

MTP acceptance with one draft token, as greedy speculative decoding would see it:
on each prompt + greedy reply, the draft for the token after next, from the hidden
state at t and the token at t + 1, is compared with the reply's token at t + 2, for
every reply token but the first (the first is sampled from the prefill, with no draft).

    python -m training.evaluate training/out/qwen3next-tiny      # the saved checkpoint
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import mlx_qwen3next.model  # noqa: F401  (loads OpenBLAS before mlx.core)
import mlx.core as mx

from .corpus import held_out_eval, is_correct, render

MAX_NEW = {"arithmetic": 64, "tool_call": 40, "tool_answer": 32, "repeat": 32, "identity": 56}


def prompt_ids(tok, item) -> list[int]:
    return tok.encode(render(item["messages"], item["tools"], add_generation_prompt=True)).ids


def greedy(model, prompts: list[list[int]], max_new: int, stop_ids, pad_id: int,
           batch: int = 64) -> list[list[int]]:
    """Greedy replies (stop token included when reached) for token-id prompts."""
    out = []
    stop = np.array(sorted(stop_ids))
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        L = max(len(p) for p in chunk)
        pad = [L - len(p) for p in chunk]
        ids = mx.array([[pad_id] * k + p for k, p in zip(pad, chunk)], dtype=mx.int32)
        cache = model.make_cache(left_pad=pad if any(pad) else None)
        tok = mx.argmax(model(ids, cache)[:, -1], axis=-1)
        gen, done = [], np.zeros(len(chunk), dtype=bool)
        for _ in range(max_new):
            t = np.array(tok)
            gen.append(t)
            done |= np.isin(t, stop)
            if done.all():
                break
            tok = mx.argmax(model(tok[:, None], cache)[:, -1], axis=-1)
        gen = np.stack(gen, axis=1)
        for row in gen:
            hits = np.flatnonzero(np.isin(row, stop))
            out.append(row[: hits[0] + 1 if len(hits) else len(row)].tolist())
    return out


def mtp_acceptance(model, prompts, replies, pad_id: int, batch: int = 64) -> tuple[int, int]:
    """(accepted, drafted) one-token MTP drafts over the replies (teacher-forced)."""
    accepted = drafted = 0
    for i in range(0, len(prompts), batch):
        rows = [p + r for p, r in zip(prompts[i:i + batch], replies[i:i + batch])]
        L = max(len(r) for r in rows)
        ids = mx.array([r + [pad_id] * (L - len(r)) for r in rows], dtype=mx.int32)
        h = model.hidden(ids)  # right padding: a causal model never sees it
        draft, _ = model.mtp_forward(h[:, :-1], ids[:, 1:])
        pred = np.array(mx.argmax(draft, axis=-1))  # pred[:, t] drafts ids[:, t + 2]
        ids_np = np.array(ids)
        for b, (p, r) in enumerate(zip(prompts[i:i + batch], replies[i:i + batch])):
            n, g = len(p), len(r)
            targets = np.arange(n + 1, n + g)
            accepted += int((pred[b, targets - 2] == ids_np[b, targets]).sum())
            drafted += len(targets)
    return accepted, drafted


def evaluate(model, tok, items: list[dict], stop_ids, pad_id: int, mtp: bool = True,
             batch: int = 64) -> dict:
    """Per-task accuracy (and MTP acceptance over all replies) on `items`."""
    t0 = time.perf_counter()
    by_task: dict[str, list] = {}
    for it in items:
        by_task.setdefault(it["task"], []).append(it)
    result, all_prompts, all_replies = {}, [], []
    for task, its in by_task.items():
        prompts = [prompt_ids(tok, it) for it in its]
        replies = greedy(model, prompts, MAX_NEW[task], stop_ids, pad_id, batch)
        texts = [tok.decode([t for t in r if t not in stop_ids], skip_special_tokens=False)
                 for r in replies]
        ok = [is_correct(it, t) for it, t in zip(its, texts)]
        wrong = [{"prompt": it["messages"][-1]["content"], "expected": it["expected"],
                  "got": t} for it, t, k in zip(its, texts, ok) if not k]
        result[task] = {"accuracy": float(np.mean(ok)), "n": len(ok), "wrong": wrong[:5]}
        all_prompts += prompts
        all_replies += replies
    if mtp and getattr(model, "has_mtp", False):
        acc, n = mtp_acceptance(model, all_prompts, all_replies, pad_id, batch)
        result["mtp_acceptance"] = {"accepted": acc, "drafted": n,
                                    "rate": acc / max(n, 1)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def summary(result: dict) -> str:
    parts = [f"{k} {v['accuracy']:.1%} ({v['n']})" for k, v in result.items()
             if isinstance(v, dict) and "accuracy" in v]
    if "mtp_acceptance" in result:
        parts.append(f"MTP acceptance {result['mtp_acceptance']['rate']:.1%}")
    return ", ".join(parts)


def main():
    from mlx_qwen3next import load_model
    from tokenizers import Tokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--max-per-task", type=int, default=None)
    ap.add_argument("--dtype", default=None, help="cast the weights (default: as stored)")
    ap.add_argument("--json-out", default=None, help="also write the result here")
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    path = Path(args.path)
    model = load_model(path, dtype=args.dtype)
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    special = {t: tok.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>")}
    res = evaluate(model, tok, held_out_eval(args.max_per_task), set(special.values()),
                   special["<|endoftext|>"], batch=args.batch)
    print(summary(res))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1))
    else:
        print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
