"""What each conversion costs in quality, on the trained tiny model (training/).

    python bench/quality.py [--source DIR] [--items 100] [--cli-items 50] [--write]

The source is the shipped bf16 checkpoint (mlx_qwen3next/assets/qwen3next-tiny), or
--source. In one run it converts it every way below into a temporary folder, loads each
result as a user does, and prints for each:

  size / bits    bytes of the weight files; bits per weight over the source's parameters
  KL, top-1      mean KL(bf16 || variant) in nats and top-1 agreement, teacher-forced on
                 the assistant tokens of held-out chats with their right replies
  accuracy       held-out task accuracy, greedy, batched (training/evaluate.py), on
                 --items items per task (numbers and cities never trained on)
  MTP            the real speculative loop (one draft token), greedy, over held-out
                 prompts: acceptance and tokens per main-model forward

Variants: bf16 (the source as loaded), our 8bit, 4bit at the default group size 64
(this model's 32-wide expert inputs stay float there) and at group 32, mixed-3-4 and a
--max-memory fit (group 32), our 4bit with the router and shared-expert gate at 4 bits
instead of 8, our 4bit with the norms rounded to bf16 (what a loader that adds the 1 in
bf16 does), and mlx-lm's `convert` at 4 bits, group 32 (it drops the MTP head).

Then the held-out accuracy the way a user would measure it: `qwen3next generate --temp 0
--json` (with `--tools` for the weather question), run in this process through the
CLI's own entry point, on --cli-items items per task, for bf16 and our default 4bit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import mlx_qwen3next  # noqa: E402  (OpenBLAS before mlx.core)
import mlx.core as mx  # noqa: E402

from mlx_qwen3next import load_model  # noqa: E402
from mlx_qwen3next.assets import TINY  # noqa: E402
from mlx_qwen3next.quantize import convert  # noqa: E402
from mlx_qwen3next.quantize.recipe import make_recipe  # noqa: E402
from training import corpus  # noqa: E402
from training.evaluate import evaluate, prompt_ids  # noqa: E402


def weight_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))


def source_parameters(path: Path) -> int:
    return sum(a.size for f in Path(path).glob("*.safetensors") for a in mx.load(str(f)).values())


def round_norms_to_bf16(model):
    """The zero-centred RMSNorm weights (1 + w) rounded to bf16, as a loader that adds the
    1 in the checkpoint's dtype leaves them."""
    from mlx_qwen3next.model.norms import RMSNorm

    for _, m in model.named_modules():
        if isinstance(m, RMSNorm):
            m.weight = m.weight.astype(mx.bfloat16).astype(m.weight.dtype)
    return model


def dequantized(model):
    """The quantized modules as float32 ones with the dequantized weights: the same
    numbers to float rounding, without MLX's CPU quantized kernels (slow in batches)."""
    import mlx.nn as nn
    from mlx.utils import tree_unflatten

    from mlx_qwen3next.model.switch import QuantizedSwitchLinear, SwitchLinear

    def weight(m):
        return mx.dequantize(m.weight, m.scales, m.get("biases"), group_size=m.group_size,
                             bits=m.bits, mode=m.mode).astype(mx.float32)

    swaps = []
    for path, m in model.named_modules():
        if isinstance(m, nn.QuantizedLinear):
            w = weight(m)
            new = nn.Linear(w.shape[1], w.shape[0], bias="bias" in m)
            new.weight = w
            if "bias" in m:
                new.bias = m.bias
        elif isinstance(m, nn.QuantizedEmbedding):
            w = weight(m)
            new = nn.Embedding(*w.shape)
            new.weight = w
        elif isinstance(m, QuantizedSwitchLinear):
            w = weight(m)
            new = SwitchLinear(w.shape[2], w.shape[1], w.shape[0])
            new.weight = w
        else:
            continue
        swaps.append((path, new))
    model.update_modules(tree_unflatten(swaps))
    model.reset_compiled()
    return model


def mlx_lm_convert(source: Path, target: Path):
    from mlx_lm import convert as lm_convert

    lm_convert(str(source), str(target), quantize=True, q_bits=4, q_group_size=32)


def variants(source: Path, work: Path, budget: str):
    """(name, path, post-load transform) for each row, converting as it goes."""
    r4 = make_recipe("4bit", group_size=32)
    ours = [("8bit", dict(recipe="8bit", group_size=32)),
            ("4bit (default, group 64)", dict(recipe="4bit")),
            ("4bit, group 32", dict(recipe="4bit", group_size=32)),
            ("mixed-3-4, group 32", dict(recipe="mixed-3-4", group_size=32)),
            (f"4bit fit to {budget}, group 32", dict(recipe="4bit", group_size=32,
                                                     max_memory=budget)),
            ("4bit, gates at 4 bits", dict(recipe=replace(r4, bits={**r4.bits, "gate": 4})))]
    yield "bf16", source, None
    for i, (name, kw) in enumerate(ours):
        target = work / f"v{i}"
        convert(source, target, force=True, progress=False, **kw)
        yield name, target, None
    yield "4bit, group 32, norms rounded to bf16", work / "v2", round_norms_to_bf16
    lm = work / "mlx-lm"
    mlx_lm_convert(source, lm)
    yield "mlx-lm convert, 4 bits, group 32", lm, None


def chats(items: list[dict]) -> list[tuple[list[int], int]]:
    """(token ids of prompt + right reply, prompt length) for held-out items with a
    reference reply (arithmetic, tool calls, repeat)."""
    out = []
    for it in items:
        if it["task"] == "arithmetic":
            a, op, b = _operands(it["messages"][0]["content"])
            reply = {"role": "assistant", "content": corpus.arithmetic_reply(a, op, b)}
        elif it["task"] == "tool_call":
            reply = corpus.tool_call(_asked_city(it))
        elif it["task"] == "repeat":
            reply = {"role": "assistant", "content": it["expected"]}
        else:
            continue
        out.append((it["messages"] + [reply], it["tools"]))
    return out


def _asked_city(item: dict) -> str:
    """The city of a held-out "What's the weather in <City>?" question."""
    question = item["messages"][-1]["content"]
    return question[len("What's the weather in "):-1]


def _operands(question: str):
    a, op, b = question[len("What is "):-1].split()
    return int(a), op, int(b)


def log_probs_on_replies(model, tok, convs) -> list[mx.array]:
    out = []
    for messages, tools in convs:
        head = tok.encode(corpus.render(messages[:-1], tools, add_generation_prompt=True)).ids
        ids = tok.encode(corpus.render(messages, tools)).ids
        logits = model(mx.array([ids]))[0, len(head) - 1:-1].astype(mx.float32)
        lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        mx.eval(lp)
        out.append(lp)
    return out


def kl_top1(ref, new) -> tuple[float, float]:
    r, n = mx.concatenate(ref), mx.concatenate(new)
    kl = (mx.exp(r) * (r - n)).sum(-1).mean().item()
    return kl, (r.argmax(-1) == n.argmax(-1)).astype(mx.float32).mean().item()


def mtp_loop(model, tok, items, max_tokens: int = 48) -> tuple[float, float] | None:
    from mlx_qwen3next.generation.speculative import MTPStats, speculative_stream

    if not getattr(model, "has_mtp", False):
        return None
    stats = MTPStats()
    stop = {tok.token_to_id("<|im_end|>")}
    for it in items:
        for t, *_ in speculative_stream(model, prompt_ids(tok, it), model.make_cache(),
                                        draft_tokens=1, max_tokens=max_tokens, stats=stats):
            if int(t) in stop:
                break
    return stats.acceptance, stats.tokens_per_forward


def cli_accuracy(model_path: Path, items: list[dict], tools_file: Path) -> dict:
    """Accuracy per task through `qwen3next generate --temp 0 --json` (CliRunner)."""
    from typer.testing import CliRunner

    from mlx_qwen3next.cli.app import app

    runner, result = CliRunner(), {}
    for it in items:
        args = ["generate", str(model_path), "-p", it["messages"][-1]["content"], "--temp", "0",
                "--json", "-m", "64"]
        if it["tools"]:
            args += ["--tools", str(tools_file)]
        res = runner.invoke(app, args)
        text = json.loads(res.stdout.strip().splitlines()[-1])["text"] if res.exit_code == 0 else ""
        ok = corpus.is_correct(it, text)
        if it["task"] == "tool_call":
            ok = ok and _call_city(text) == _asked_city(it)
        result.setdefault(it["task"], []).append(ok)
    return {task: (sum(v) / len(v), len(v)) for task, v in result.items()}


def _call_city(text: str):
    """The city argument of the reply's tool call, parsed as JSON (None if it is not)."""
    from mlx_qwen3next.server.tools import split_tool_calls

    _, calls = split_tool_calls(text)
    try:
        return json.loads(calls[0]["function"]["arguments"])["city"] if calls else None
    except (ValueError, KeyError, TypeError):
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=TINY)
    ap.add_argument("--items", type=int, default=100, help="held-out items per task")
    ap.add_argument("--cli-items", type=int, default=50,
                    help="items per task through `qwen3next generate` (0: skip)")
    ap.add_argument("--mtp-items", type=int, default=30)
    ap.add_argument("--budget", default=None, help="the --max-memory fit (default: 85%% "
                                                   "of the 4bit group-32 size)")
    args = ap.parse_args(argv)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(args.source / "tokenizer.json"))
    stop = {tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")}
    pad = tok.token_to_id("<|endoftext|>")
    items = corpus.held_out_eval(args.items)
    mtp_items = [it for it in corpus.held_out_eval(args.mtp_items)
                 if it["task"] in ("arithmetic", "tool_call", "tool_answer")]
    convs = chats(items)
    n_params = source_parameters(args.source)
    rows, ref = [], None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        budget = args.budget
        if budget is None:
            convert(args.source, work / "probe", "4bit", group_size=32, progress=False)
            budget = f"{int(0.85 * weight_bytes(work / 'probe'))}B"
        for name, path, post in variants(args.source, work, budget):
            t0 = time.perf_counter()
            model = load_model(path)
            if model.config.quantization:
                model = dequantized(model)
            if post is not None:
                model = post(model)
            lp = log_probs_on_replies(model, tok, convs)
            ref = lp if ref is None else ref
            kl, top1 = kl_top1(ref, lp)
            acc = evaluate(model, tok, items, stop, pad, mtp=False)
            mtp = mtp_loop(model, tok, mtp_items)
            size = weight_bytes(path)
            rows.append((name, size, 8 * size / n_params, kl, top1, acc, mtp))
            print(f"{name}: done in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
            del model
        cli = None
        if args.cli_items:
            tools_file = work / "tools.json"
            tools_file.write_text(json.dumps(corpus.TOOLS))
            cli_items = [it for it in corpus.held_out_eval(args.cli_items)
                         if it["task"] in ("arithmetic", "tool_call")]
            cli = {"bf16": cli_accuracy(args.source, cli_items, tools_file),
                   "4bit (default)": cli_accuracy(work / "v1", cli_items, tools_file)}
    print_table(rows, n_params, len(convs), cli)


def print_table(rows, n_params, n_chats, cli):
    tasks = [t for t in ("arithmetic", "tool_call", "tool_answer", "repeat", "identity")
             if t in rows[0][5]]
    counts = ", ".join(f"{t} {rows[0][5][t]['n']}" for t in tasks)
    print(f"\nsource: {n_params:,} parameters; KL and top-1 over the assistant tokens of "
          f"{n_chats} held-out chats; accuracy on held-out items ({counts})\n")
    print("| variant | size | bits/weight | mean KL | top-1 | "
          + " | ".join(tasks) + " | MTP acceptance | tokens/forward |")
    print("|---|---|---|---|---|" + "---|" * len(tasks) + "---|---|")
    for name, size, bpw, kl, top1, acc, mtp in rows:
        a = " | ".join(f"{acc[t]['accuracy']:.1%}" for t in tasks)
        m = f"{mtp[0]:.1%} | {mtp[1]:.2f}" if mtp else "no MTP head | 1.00"
        print(f"| {name} | {size / 1e6:.2f} MB | {bpw:.2f} | {kl:.4f} | {top1:.1%} | {a} | {m} |")
    if cli:
        print("\nthrough `qwen3next generate --temp 0 --json` (tool calls parsed as JSON, "
              "the asked city checked):\n")
        print("| model | " + " | ".join(next(iter(cli.values()))) + " |")
        print("|---|" + "---|" * len(next(iter(cli.values()))))
        for name, res in cli.items():
            print(f"| {name} | " + " | ".join(f"{a:.1%} ({n})" for a, n in res.values()) + " |")


if __name__ == "__main__":
    main()
