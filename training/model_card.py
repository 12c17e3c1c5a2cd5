"""The trained checkpoint's README.md: how it was made and what it can and cannot do,
from the figures the training run measured (results.json, loss_curve.json)."""

from __future__ import annotations

from pathlib import Path

TASKS = {
    "arithmetic": "`What is A + B?` / `What is A - B?`, a seeded sample of the 2000 "
                  "held-out (A, op, B) triples; the reply ends `= C.` with the right C",
    "tool_call": "`What's the weather in <City>?` with the get_weather tool, held-out real "
                 "and generated city names; the exact `<tool_call>` block",
    "tool_answer": "after a held-out tool result: the reply names the temperature, "
                   "condition and city",
    "repeat": "`Repeat after me: X, Y` with held-out city names; the exact names back",
    "identity": "held-out phrasings of 'who are you'; the reply says it is a tiny "
                "Qwen3-Next demo model",
}


def _curve_table(curve: list, rows: int = 8) -> str:
    if not curve:
        return "(no curve)"
    pick = sorted({round(i * (len(curve) - 1) / (rows - 1)) for i in range(rows)})
    lines = ["| step | loss | main | MTP | balance | lr |", "|---|---|---|---|---|---|"]
    for i in pick:
        p = curve[i]
        lines.append(f"| {p['step']} | {p['loss']:.4f} | {p['main']:.4f} | {p['mtp']:.4f} "
                     f"| {p['aux']:.3f} | {p['lr']:.2e} |")
    return "\n".join(lines)


def _diff_clause(u: dict) -> str:
    d, scale = u.get("max_abs_diff", float("nan")), u.get("logit_scale", float("nan"))
    if d != d or scale != scale:  # NaN: the in-memory reference had NaN on padded positions
        return ""
    return f"max |logit diff| {d:.3f} of logits up to {scale:.1f}, "


def _copy_clause(a: dict) -> str:
    if not a.get("copy_steps"):
        return ""
    return (f" The first {a['copy_steps']} steps see only `Repeat after me` rows: in the full"
            " mix the model sits on a loss plateau without learning to copy a name out of"
            " the prompt, and copy-dense rows first get it learned within a few hundred"
            " steps.")


def write_card(out: Path, run: dict, curve: list):
    a, cfg, n = run["args"], run["config"], run["parameters"]
    ev = run.get("held_out_bf16", {})
    acc_rows = "\n".join(
        f"| {t} | {ev[t]['accuracy']:.1%} | {ev[t]['n']} | {TASKS[t]} |"
        for t in TASKS if t in ev)
    mtp = ev.get("mtp_acceptance")
    mtp_line = (f"{mtp['rate']:.1%} ({mtp['accepted']} of {mtp['drafted']} one-token "
                f"drafts over the held-out replies, greedy)" if mtp else "not measured")
    weak = "".join(f"- {t}: {ev[t]['accuracy']:.0%} of the held-out items right "
                   f"({TASKS[t].split(';')[0]}).\n" for t in TASKS
                   if t in ev and ev[t]["accuracy"] < 0.9)
    weak = f"Below 90% on held-out prompts:\n\n{weak}\n" if weak else ""
    rc = run.get("reload_check", {})
    f32 = rc.get("float32_load_vs_rounded_in_memory", {})
    u = rc.get("bf16_load_vs_float32_in_memory", {})
    last = run.get("final_loss") or {}
    size_mb = run.get("disk_bytes", 0) / 1e6
    command = f"nice -n 19 python -m training.train_tiny --out {a['out']}"
    cut = run["steps"] < a["steps"]
    if cut:  # stopped by the wall-clock guard: repeat the same steps exactly
        command += f" --stop-at {run['steps']} --max-minutes 0"
    stop_note = (f" (the {a['max_minutes']:g}-minute guard stopped it before the "
                 f"{a['steps']} steps of its schedule; lr at the stop "
                 f"{last.get('lr', float('nan')):.2e})" if cut else "")
    text = f"""# qwen3next-tiny: a tiny trained Qwen3-Next demo model

A {n['total'] / 1e6:.1f}M-parameter model in the real Qwen3-Next layout, trained from
scratch on a synthetic chat corpus so that `qwen3next chat` has something that answers.
It was trained on a few things only: two-number arithmetic below 100 (worked digit by
digit, units first, then the result), a `get_weather` tool call, an answer from the tool's
result, repeating names back, and who it is; how well it does each, on prompts it never
saw, is measured below.

## Layout

{cfg['num_hidden_layers']} layers in {cfg['num_hidden_layers'] // 4} blocks of 3 Gated DeltaNet + 1 gated
attention (full_attention_interval 4); hidden {cfg['hidden_size']}; attention
{cfg['num_attention_heads']} q / {cfg['num_key_value_heads']} kv heads of {cfg['head_dim']}
(partial RoPE {cfg['partial_rotary_factor']}, rope_theta {cfg['rope_theta']:g}: the real
model's 1e7 leaves 8 rotary dimensions almost no resolution at short range); DeltaNet {cfg['linear_num_key_heads']} key /
{cfg['linear_num_value_heads']} value heads of {cfg['linear_key_head_dim']}; every layer a MoE
of {cfg['num_experts']} routed experts (top {cfg['num_experts_per_tok']}, intermediate
{cfg['moe_intermediate_size']}) plus the gated shared expert (intermediate
{cfg['shared_expert_intermediate_size']}); untied lm_head; vocab {cfg['vocab_size']}
(byte-level BPE, digits split one per token); one MTP layer (num_nextn_predict_layers 1).
Parameters: {n['total']:,} in all ({n['main_model']:,} main model, {n['mtp_head']:,} MTP
head; {n['active_per_token']:,} active per token). Weights: bf16 safetensors in the Hub
layout (one tensor per expert, zero-centred norms stored as w), {size_mb:.1f} MB on disk.

## Training

`{command}` (the defaults are this run's settings; seed {a['seed']}: the corpus generator,
`mx.random.seed` for the initial weights and numpy's Generator for the batch order; float
results can differ in the last bits with another BLAS or thread count). Corpus: {a['corpus_size']} ChatML conversations
from training/corpus.py (arithmetic, one to four rounds of weather tool calls and answers,
repeating names, identity, greetings, the weather without a tool; every city a training
row names is drawn fresh, so names have to be copied, not remembered), rendered with the
package's chat template (Qwen3-Next's conventions: tools in the system turn, tool results as
`<tool_response>` blocks in a user turn). Loss on assistant
tokens only: next-token cross-entropy + {a['mtp_weight']} x the MTP head's token-after-next
cross-entropy (hidden state at t and embedding of token t + 1) + {a['aux_weight']} x a
Switch-style load-balancing loss. AdamW (betas 0.9, 0.95, weight decay {a['weight_decay']}
on matrices), lr {a['lr']} with {a['warmup']} warm-up steps then cosine to
{a['final_lr_frac']} x, gradient clip {a['clip']}, float32, ~{a['tokens_per_batch']} tokens a
batch (rows bucketed by length), on a 2-core CPU.{_copy_clause(a)}

{run['steps']} steps in {run['train_seconds'] / 60:.1f} min{stop_note}; final loss
{last.get('loss', float('nan')):.4f} (main {last.get('main', float('nan')):.4f}, MTP
{last.get('mtp', float('nan')):.4f}), averaged over the last {a['log_every']} steps.

{_curve_table(curve)}

The whole curve is in loss_curve.json, with the held-out checks made during training.

## Held-out accuracy (this checkpoint, bf16, greedy)

| task | accuracy | items | what is checked |
|---|---|---|---|
{acc_rows}

MTP acceptance: {mtp_line}, on the model's own replies, right or wrong.

Reloaded with `mlx_qwen3next.load_model`, on the real tokens of 32 training rows: the
float32 load against the trained weights rounded as stored, max |logit diff| (main and
MTP heads) {f32.get('max_abs_diff', float('nan')):.2e}; the bf16 load (as a user loads
it) against the float32 trained model, {_diff_clause(u)}argmax agreement
{u.get('argmax_agreement', 0):.1%} (MTP head {u.get('mtp_argmax_agreement', 0):.1%}).

## What it cannot do

{weak}Anything else. It has no knowledge, no general language ability and no multi-turn
skill beyond the patterns above; numbers outside 0-99, other phrasings, other tools or
several tool calls are out of distribution and get confident nonsense. It is a test
fixture and a demo of the architecture, not an assistant.
"""
    (Path(out) / "README.md").write_text(text)


def main():
    """Rewrite a trained checkpoint's README.md from its results.json and loss_curve.json."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("path", type=Path)
    path = ap.parse_args().path
    run = json.loads((path / "results.json").read_text())
    curve = json.loads((path / "loss_curve.json").read_text())["curve"]
    write_card(path, run, curve)


if __name__ == "__main__":
    main()
