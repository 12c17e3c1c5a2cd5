"""MTP speculative decoding on a trained model: `python bench/mtp.py --model DIR`.

Greedy replies to held-out prompts of the trained tiny model (training/corpus.py),
plain and with the MTP head drafting k = 1..3 tokens, through the same token loops
generation uses. Each reply runs to `<|im_end|>` or --max-tokens; the three loops take
turns, prompt by prompt, for --repeats rounds, and tok/s is the replies' tokens after
the first over the time from the first token to the last (prefill excluded). Printed:
acceptance, tokens per main-model forward, tok/s, the speed-up over plain decoding and
whether every reply is the same as plain greedy's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import mlx.core as mx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _reply(stream, stop: int, max_tokens: int):
    out, stamps = [], []
    for tok, *_ in stream:
        stamps.append(time.perf_counter())
        out.append(int(tok))
        if out[-1] == stop or len(out) >= max_tokens:
            break
    return out, stamps[-1] - stamps[0]


def run(path: Path, items: int = 8, max_tokens: int = 64, repeats: int = 3):
    from tokenizers import Tokenizer

    from mlx_qwen3next import load_model
    from mlx_qwen3next.generation import token_stream
    from mlx_qwen3next.generation.speculative import MTPStats, speculative_stream
    from training.corpus import held_out_eval
    from training.evaluate import prompt_ids

    model = load_model(path)
    tok = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
    stop = tok.token_to_id("<|im_end|>")
    prompts = [prompt_ids(tok, it) for it in held_out_eval(items)
               if it["task"] in ("arithmetic", "tool_call", "tool_answer")]
    greedy = lambda logits: mx.argmax(logits, axis=-1)
    loops = {"plain": lambda p, s: token_stream(model, p, model.make_cache(), greedy)}
    for k in (1, 2, 3):
        loops[f"MTP k = {k}"] = (lambda k: lambda p, s: speculative_stream(
            model, p, model.make_cache(), draft_tokens=k, stats=s))(k)
    stats = {name: MTPStats() for name in loops}
    tokens = {name: 0 for name in loops}
    seconds = {name: 0.0 for name in loops}
    replies = {name: [] for name in loops}
    for r in range(repeats + 1):  # round 0 warms up (traces the compiled steps)
        for p in prompts:
            for name, loop in loops.items():
                s = MTPStats() if r == 0 else stats[name]
                out, dt = _reply(loop(p, s), stop, max_tokens)
                if r == 0:
                    continue
                tokens[name] += len(out) - 1
                seconds[name] += dt
                if r == 1:
                    replies[name].append(out)
    base = tokens["plain"] / seconds["plain"]
    print(f"# MTP on {Path(path).name}: {len(prompts)} held-out prompts, greedy, "
          f"{repeats} rounds, {sum(len(x) for x in replies['plain'])} reply tokens a round\n")
    print("| decoding | acceptance | tokens/forward | tok/s | speed-up | same replies as plain |")
    print("|---|---|---|---|---|---|")
    for name in loops:
        tps = tokens[name] / seconds[name]
        acc = f"{stats[name].acceptance:.1%}" if name != "plain" else ""
        tpf = f"{stats[name].tokens_per_forward:.2f}" if name != "plain" else "1.00"
        same = "yes" if replies[name] == replies["plain"] else "NO"
        print(f"| {name} | {acc} | {tpf} | {tps:.1f} | {tps / base:.2f}x | {same} |")
