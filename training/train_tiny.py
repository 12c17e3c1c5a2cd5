"""Train the tiny Qwen3-Next demo model on the synthetic chat corpus, on the CPU, in MLX.

The real layout scaled down: 8 layers in two 3:1 blocks (6 Gated DeltaNet, 2 gated
attention; full_attention_interval 4), every layer a sparse MoE (routed experts
plus the gated shared expert), zero-centred norms, untied lm_head, and the MTP head
(num_nextn_predict_layers 1) trained jointly: the main loss is next-token cross-
entropy, the MTP loss predicts token t + 2 from the hidden state at t and the
embedding of token t + 1 (model.mtp_forward), both on assistant tokens only; a
small Switch-style load-balancing loss keeps the routers from collapsing. AdamW
(warmup + cosine), float32, one mx.compile'd step per batch shape. The model is
our own Model class built from ModelConfig, with the plain modules (no CPU
specialisation), so nn.value_and_grad runs through all of it.

Everything is reproducible from --seed (default 0): the corpus (random.Random),
mx.random.seed (initial weights) and numpy's Generator (batch order). It writes
the checkpoint in the Hub layout to --out with its loss curve, results and card.

    nice -n 19 python -m training.train_tiny --out training/out/qwen3next-tiny
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import time
from functools import partial
from itertools import chain, islice
from pathlib import Path

import numpy as np

from mlx_qwen3next.config import ModelConfig  # first: loads OpenBLAS before mlx.core
from mlx_qwen3next.kernels import dispatch
from mlx_qwen3next.model import Model
from mlx_qwen3next.testing.tiny import tiny_config

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from . import corpus as corpus_mod
from . import fastops
from .data import Batches, check_masks, encode_corpus
from .evaluate import evaluate, summary
from .export import check_reload, disk_size, export
from .model_card import write_card
from .moe import balance_loss, recorded_routes, training_moe
from .tokenizer import train_tokenizer


def hub_config(args, vocab_size: int) -> dict:
    """config.json of the model (tiny.py's builder, this model's sizes)."""
    return tiny_config(
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        intermediate_size=2 * args.hidden,  # unused: every layer is MoE
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.head_dim,
        linear_key_head_dim=args.linear_head_dim,
        linear_value_head_dim=args.linear_head_dim,
        linear_num_key_heads=args.linear_key_heads,
        linear_num_value_heads=args.linear_value_heads,
        moe_intermediate_size=args.moe_intermediate,
        shared_expert_intermediate_size=args.shared_intermediate,
        num_experts=args.experts,
        num_experts_per_tok=args.top_k,
        full_attention_interval=4,
        num_nextn_predict_layers=1,
        max_position_embeddings=4096,
        rope_theta=args.rope_theta,
        torch_dtype="bfloat16",
    )


# -- initialisation ------------------------------------------------------------
_OUT_PROJ = ("o_proj.weight", "out_proj.weight", "down_proj.weight")


def init_weights(model: Model, n_layers: int, std: float = 0.02, qk_norm: float = 2.0):
    """GPT-style init: N(0, std) matrices, output projections scaled by 1/sqrt(2 L);
    DeltaNet decay as in flash-linear-attention (A ~ U(1, 16), dt ~ logU(1e-3, 0.1));
    norms at 1 (stored 0), depthwise conv at MLX's default; attention's q_norm and k_norm
    at `qk_norm`: after them q . k / sqrt(head_dim) is at most head_dim^0.5 x their
    weights squared, 5.7 at head_dim 32 and weight 1 (16 for the real model's 256), too
    flat a softmax to copy one token out of hundreds."""
    new = []
    for name, w in tree_flatten(model.parameters()):
        if name.endswith("A_log"):
            w = mx.log(mx.random.uniform(1.0, 16.0, w.shape))
        elif name.endswith("dt_bias"):
            dt = mx.exp(mx.random.uniform(math.log(1e-3), math.log(0.1), w.shape))
            w = dt + mx.log(-mx.expm1(-dt))  # softplus^-1(dt)
        elif name.endswith(("q_norm.weight", "k_norm.weight")):
            w = mx.full(w.shape, qk_norm)
        elif w.ndim >= 2 and "conv1d" not in name:
            s = std / math.sqrt(2 * n_layers) if name.endswith(_OUT_PROJ) else std
            w = mx.random.normal(w.shape) * s
        new.append((name, w))
    model.update(tree_unflatten(new))


# -- the objective ----------------------------------------------------------------
def masked_ce(logits, targets, mask):
    ce = fastops.cross_entropy(logits, targets)
    m = mask.astype(mx.float32)
    return (ce * m).sum() / mx.maximum(m.sum(), 1.0)


def make_loss(num_experts: int, pad_id: int, mtp_weight: float, aux_weight: float):
    def loss_fn(model, ids, mask):
        with recorded_routes() as routes:
            h = model.hidden(ids)
            main = masked_ce(model.logits(h[:, :-1]), ids[:, 1:], mask[:, 1:])
            draft, _ = model.mtp_forward(h[:, :-2], ids[:, 1:-1])
            mtp = masked_ce(draft, ids[:, 2:], mask[:, 2:])
            aux = balance_loss(routes, ids != pad_id, num_experts)
        return main + mtp_weight * mtp + aux_weight * aux, main, mtp, aux

    return loss_fn


def make_optimizer(args, steps: int):
    warmup = min(args.warmup, steps // 2)
    schedule = optim.join_schedules(
        [optim.linear_schedule(args.lr / 100, args.lr, warmup),
         optim.cosine_decay(args.lr, max(steps - warmup, 1), args.lr * args.final_lr_frac)],
        [warmup])
    betas = [0.9, 0.95]
    decayed = optim.AdamW(schedule, betas=betas, weight_decay=args.weight_decay)
    plain = optim.AdamW(schedule, betas=betas, weight_decay=0.0)
    # decay the matrices; not norms, A_log, dt_bias or the depthwise conv
    return optim.MultiOptimizer(
        [decayed, plain], [lambda path, w: w.ndim >= 2 and "conv1d" not in path])


def parameter_counts(model: Model, cfg: ModelConfig) -> dict:
    flat = dict(tree_flatten(model.parameters()))
    total = sum(w.size for w in flat.values())
    mtp = sum(w.size for k, w in flat.items() if k.startswith("mtp."))
    experts = sum(w.size for k, w in flat.items() if ".switch_mlp." in k)
    active = total - experts + experts * cfg.num_experts_per_tok // cfg.num_experts
    return {"total": total, "main_model": total - mtp, "mtp_head": mtp,
            "routed_experts": experts, "active_per_token": active}


# -- the run ------------------------------------------------------------------------
def build(args):
    """Corpus, tokenizer, encoded rows, config and the initialised model."""
    t0 = time.perf_counter()
    corpus = corpus_mod.build_corpus(args.corpus_size, args.seed)
    for conv in corpus:
        conv["text"], conv["spans"] = corpus_mod.assistant_spans(conv["messages"],
                                                                 conv["tools"])
    tok = train_tokenizer([c["text"] for c in corpus], args.vocab_size)
    enc = encode_corpus(tok, corpus)
    check_masks(tok, corpus, enc)
    print(f"corpus {len(corpus)} conversations, tokenizer {tok.get_vocab_size()} tokens, "
          f"{sum(len(x) for x in enc.ids)} tokens ({sum(m.sum() for m in enc.masks)} "
          f"trained), {time.perf_counter() - t0:.0f}s", flush=True)
    hub = hub_config(args, tok.get_vocab_size())
    cfg = ModelConfig.from_dict(hub)
    mx.random.seed(args.seed)
    model = Model(cfg, mtp=True)
    init_weights(model, cfg.num_hidden_layers)
    mx.eval(model.parameters())
    return corpus, tok, enc, hub, cfg, model


def copy_phase(args, tok, pad_id):
    """The first --copy-steps batches: "Repeat after me" rows only. Copying a name out of
    the prompt is what the tool call needs, and in the full mix a model sits on a loss
    plateau without learning it; copy-dense rows first get it learned early."""
    if not args.copy_steps:
        return iter(())
    n = args.copy_steps * args.tokens_per_batch // 24  # rows are ~30-60 tokens
    rows = corpus_mod.build_corpus(n, args.seed + 1, mix={"repeat": 1.0})
    for conv in rows:
        conv["text"], conv["spans"] = corpus_mod.assistant_spans(conv["messages"], None)
    enc = encode_corpus(tok, rows)
    return islice(iter(Batches(enc, args.tokens_per_batch, pad_id, args.seed)),
                  args.copy_steps)


def window_mean(window):
    """The mean of a log window's finite steps, and how many were not finite (their
    batches moved no weight, so they do not belong in the curve)."""
    rows = np.array(window, dtype=np.float64)
    finite = np.isfinite(rows).all(axis=1)
    if not finite.any():
        return rows.mean(axis=0), int(len(rows))
    return rows[finite].mean(axis=0), int((~finite).sum())


def train_loop(args, step, state, batches, opt, model, tok, eval_items, stop_ids, pad_id):
    """Run the steps; returns (steps done, loss curve, evals during training)."""
    curve, evals, window = [], [], []
    t_start = time.perf_counter()
    t_log, tokens, done = t_start, 0, 0
    it = chain(copy_phase(args, tok, pad_id), iter(batches))
    for s in range(1, args.steps + 1):
        ids, mask = next(it)
        res = step(mx.array(ids), mx.array(mask))
        mx.eval(state, res)
        window.append([float(x) for x in res])
        tokens += ids.size
        done = s
        if s % args.log_every == 0 or s == args.steps:
            now = time.perf_counter()
            w, skipped = window_mean(window)
            point = {"step": s, "loss": w[0], "main": w[1], "mtp": w[2], "aux": w[3],
                     "grad_norm": w[4], "lr": float(opt.optimizers[0].learning_rate),
                     "tokens": tokens, "seconds": round(now - t_start, 1),
                     "steps_per_s": len(window) / (now - t_log), "epoch": batches.epoch,
                     "skipped": skipped}
            curve.append(point)
            print(f"step {s:5d} loss {w[0]:.4f} main {w[1]:.4f} mtp {w[2]:.4f} "
                  f"aux {w[3]:.3f} |g| {w[4]:.2f} lr {point['lr']:.2e} "
                  f"{point['steps_per_s']:.2f} steps/s {point['seconds']:.0f}s"
                  + (f" ({skipped} non-finite batches skipped)" if skipped else ""), flush=True)
            window, t_log = [], now
        if args.eval_every and (s % args.eval_every == 0 or s == args.steps):
            with fastops.unpatched():  # inference: MLX's own ops
                r = evaluate(model, tok, eval_items, stop_ids, pad_id)
            evals.append({"step": s, **r})
            print(f"eval step {s}: {summary(r)} [{r['seconds']}s]", flush=True)
            for task, v in r.items():
                if isinstance(v, dict) and v.get("wrong"):
                    print(f"  e.g. {task}: {v['wrong'][0]['got']!r}", flush=True)
            t_log += r["seconds"]
        if s == args.stop_at:
            print(f"stopping at step {s} (--stop-at)", flush=True)
            break
        if args.max_minutes and time.perf_counter() - t_start > 60 * args.max_minutes:
            print(f"stopping at step {s}: the {args.max_minutes} min budget is spent",
                  flush=True)
            break
    return done, curve, evals


def train(args):
    t_run = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus, tok, enc, hub, cfg, model = build(args)
    counts = parameter_counts(model, cfg)
    print(f"parameters: {counts}", flush=True)
    pad_id = tok.token_to_id("<|endoftext|>")
    stop_ids = {tok.token_to_id("<|im_end|>"), pad_id}
    batches = Batches(enc, args.tokens_per_batch, pad_id, args.seed)
    print(f"batch shapes (rows, length): {batches.shapes()}", flush=True)

    undo_moe = training_moe(model, {"auto": None, "dense": True, "gather": False}[args.moe_path])
    model.train()
    loss_fn = make_loss(cfg.num_experts, pad_id, args.mtp_weight, args.aux_weight)
    opt = make_optimizer(args, args.steps)
    opt.init(model.trainable_parameters())
    grad_fn = nn.value_and_grad(model, loss_fn)
    state = [model.state, opt.state, mx.random.state]

    def step(ids, mask):
        (loss, main, mtp, aux), grads = grad_fn(model, ids, mask)
        grads, norm = optim.clip_grad_norm(grads, args.clip)
        # a batch whose gradients overflow moves no weight by them (a no-op otherwise)
        finite = mx.isfinite(norm)
        grads = tree_map(lambda g: mx.where(finite, g, mx.zeros_like(g)), grads)
        opt.update(model, grads)
        return loss, main, mtp, aux, norm

    if args.compile:
        step = partial(mx.compile, inputs=state, outputs=state)(step)

    eval_items = corpus_mod.held_out_eval(args.eval_per_task)
    t0 = time.perf_counter()
    # the plain delta-rule ops: a CPU load elsewhere in the process may have set a policy
    # whose products have no vjp
    with fastops.patched(), dispatch.using(dispatch.PLAIN):
        done, curve, evals = train_loop(args, step, state, batches, opt, model, tok,
                                        eval_items, stop_ids, pad_id)
    train_seconds = time.perf_counter() - t0
    undo_moe()
    model.eval()

    run = {"args": vars(args), "config": hub, "parameters": counts, "steps": done,
           "train_seconds": round(train_seconds, 1), "final_loss": curve[-1] if curve else None}
    (out / "loss_curve.json").write_text(json.dumps({"curve": curve, "evals": evals},
                                                    indent=1))
    if args.no_export:
        return run
    export(model, hub, tok, out)
    rows = [x.tolist() for x in enc.ids[:32]]  # training rows of every task
    L = max(len(x) for x in rows)
    ids = mx.array([x + [pad_id] * (L - len(x)) for x in rows])
    valid = mx.array([[True] * len(x) + [False] * (L - len(x)) for x in rows])
    run["reload_check"] = check_reload(model, out, ids, valid)
    print(f"reload check: {run['reload_check']}", flush=True)
    run["disk_bytes"] = disk_size(out)

    # the held-out figures of the saved checkpoint, loaded as a user loads it (bf16,
    # fitted to the device), in a fresh process
    t0 = time.perf_counter()
    res_path = out / "held_out.json"
    subprocess.run([sys.executable, "-m", "training.evaluate", str(out),
                    "--max-per-task", str(args.final_eval_per_task),
                    "--json-out", str(res_path)], check=True,
                   cwd=Path(__file__).resolve().parent.parent)
    run["held_out_bf16"] = json.loads(res_path.read_text())
    res_path.unlink()
    print(f"held-out (bf16 checkpoint): {summary(run['held_out_bf16'])} "
          f"[{time.perf_counter() - t0:.0f}s]", flush=True)
    run["total_seconds"] = round(time.perf_counter() - t_run, 1)
    (out / "results.json").write_text(json.dumps(run, indent=1))
    write_card(out, run, curve)
    return run


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a = ap.add_argument
    a("--out", default="training/out/qwen3next-tiny")
    a("--seed", type=int, default=corpus_mod.SEED)
    a("--corpus-size", type=int, default=80000)
    a("--vocab-size", type=int, default=1024)
    a("--hidden", type=int, default=128)
    a("--layers", type=int, default=8)
    a("--heads", type=int, default=4)
    a("--kv-heads", type=int, default=2)
    a("--head-dim", type=int, default=32)
    a("--linear-key-heads", type=int, default=1)
    a("--linear-value-heads", type=int, default=2)
    a("--linear-head-dim", type=int, default=32)
    a("--experts", type=int, default=32)
    a("--top-k", type=int, default=2)
    a("--moe-intermediate", type=int, default=32)
    a("--shared-intermediate", type=int, default=256)
    a("--rope-theta", type=float, default=10000.0,
      help="the real model's 1e7 leaves 8 rotary dims almost no resolution at short range")
    a("--steps", type=int, default=3000)
    a("--copy-steps", type=int, default=400,
      help="the first steps train on name-repeating rows only (counted in --steps)")
    a("--tokens-per-batch", type=int, default=2048)
    a("--lr", type=float, default=3e-3)
    a("--warmup", type=int, default=100)
    a("--final-lr-frac", type=float, default=0.1)
    a("--weight-decay", type=float, default=0.1)
    a("--clip", type=float, default=1.0)
    a("--mtp-weight", type=float, default=0.5)
    a("--aux-weight", type=float, default=0.01)
    a("--log-every", type=int, default=25)
    a("--eval-every", type=int, default=400)
    a("--eval-per-task", type=int, default=32)
    a("--final-eval-per-task", type=int, default=600,
      help="held-out items per task for the saved checkpoint (bf16 decoding is slow "
           "on the CPU): a seeded 600 of the 2000 arithmetic triples, every city")
    a("--max-minutes", type=float, default=46,
      help="stop the steps early after this long (0: never); the schedule stays that "
           "of --steps, so a run cut short is repeated with --stop-at and --max-minutes 0")
    a("--stop-at", type=int, default=0, help="stop after this step (0: run all --steps)")
    a("--no-compile", dest="compile", action="store_false")
    a("--moe-path", choices=["auto", "dense", "gather"], default="auto",
      help="routed experts while training: dense products or the model's gather_mm")
    a("--no-export", action="store_true", help="train and evaluate only (smoke runs)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    random.seed(args.seed)
    train(args)


if __name__ == "__main__":
    main()
