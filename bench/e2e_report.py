"""The end-to-end bench's report: the comparison table, the goals, the primitives by
type, and the "End-to-end" section of bench/RESULTS.md (bench/e2e.py measures)."""

from __future__ import annotations

import re
from pathlib import Path

from measures import VIEWS, decode_bytes, launches
from slice import slice_config

HERE = Path(__file__).resolve().parent


def fmt_ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def gb(x):
    return f"{x / 1e9:.2f} GB"


def table(L: int, res: dict, bw: dict, args) -> tuple[str, dict]:
    o, m = res["ours"], res["mlx-lm"]
    cfg = slice_config(L)
    rows = ["| measure | ours | mlx-lm | ours / mlx-lm |", "|---|---|---|---|"]
    f2 = lambda x: f"{x:.2f}"

    def pair(label, a, b, show_a=f2, show_b=f2):
        """One row: both sides, their ratio; a side not measured reads 'skipped'."""
        rows.append(f"| {label} | {show_a(a)} | {'skipped' if b is None else show_b(b)} | "
                    f"{fmt_ratio(a, b)} |")

    for n in args.prefill:
        pair(f"prefill {n} tok/s", o["prefill"].get(n), m["prefill"].get(n),
             show_a=lambda x: f"{x:.1f}")
    pair(f"decode tok/s (greedy {args.tokens}, same loop; median step)", o["decode"], m["decode"])
    pair("decode tok/s (same loop; mean step)", o["decode_mean"], m["decode_mean"])
    if "generate_step" in m:
        rows.append(f"| decode tok/s, mlx-lm's generate_step (median step) | | "
                    f"{m['generate_step']:.2f} | {fmt_ratio(o['decode'], m['generate_step'])} |")
    mtp = res.get("mtp")
    if mtp is not None and "pending" in mtp:
        rows.append("| decode tok/s with MTP (1 draft) | pending | n/a | |")
    elif mtp is not None:
        rows.append(f"| decode tok/s with MTP (1 draft; random weights, acceptance "
                    f"{mtp['acceptance']:.0%}) | {mtp['tok_s']:.2f} | n/a | "
                    f"{fmt_ratio(mtp['tok_s'], m['decode'])} |")
        proj = 1.9 / mtp["round_s"]
        rows.append(f"| ... projected at 90% acceptance (1.9 tokens per "
                    f"{mtp['round_s'] * 1e3:.0f} ms round = {mtp['round_s'] * o['decode']:.2f} "
                    f"plain steps) | {proj:.2f} | n/a | {fmt_ratio(proj, m['decode'])} |")
    good = res.get("mtp_drafter")
    if good is not None:
        rows.append(f"| decode tok/s with MTP (1 draft; head made to draft the greedy token, "
                    f"acceptance {good['acceptance']:.0%}; {good['tok_s'] / o['decode']:.2f}x "
                    f"our plain decode) | {good['tok_s']:.2f} | n/a | "
                    f"{fmt_ratio(good['tok_s'], m['decode'])} |")
    rows.append(f"| weights resident (mlx-lm reads ours' arrays but the products ours "
                f"joins) | {gb(res['weights'])} | {gb(res['weights'])}, "
                f"{gb(res.get('unshared', 0))} of them its own | |")
    for n in args.prefill:
        pair(f"peak memory above weights, prefill {n}", o["prefill_peak"].get(n),
             m["prefill_peak"].get(n), gb, gb)
    pair("peak memory above weights, decode step", o["decode_peak"], m["decode_peak"], gb, gb)
    po, pm = sum(o["prims"].values()), sum(m["prims"].values())
    rows.append(f"| primitives per decode step (CPU graph) | {po} | {pm} | {fmt_ratio(po, pm)} |")
    mo, mm = sum(o["prims_metal"].values()), sum(m["prims_metal"].values())
    rows.append(f"| primitives per decode step, GPU graph (plain modules; each mx.fast op and "
                f"mlx-lm's delta-rule kernel one primitive) | {mo} | {mm} | {fmt_ratio(mo, mm)} |")
    lo, lm = launches(o["prims_metal"]), launches(m["prims_metal"])
    rows.append(f"| ... of them kernel launches (views not counted) | {lo} | {lm} | "
                f"{fmt_ratio(lo, lm)} |")
    parts = decode_bytes(cfg, args.prompt + args.tokens // 2)
    per_tok = sum(parts.values())
    bw_best = max(bw.values()) * 1e9
    rows.append(f"| bytes read per decode token (fp32) | {gb(per_tok)} | {gb(per_tok)} | |")
    rows.append(f"| achieved bandwidth (bytes x tok/s) | {gb(per_tok * o['decode'])}/s | "
                f"{gb(per_tok * m['decode'])}/s | {fmt_ratio(o['decode'], m['decode'])} |")
    rows.append(f"| ... share of measured bandwidth ({bw_best / 1e9:.1f} GB/s) | "
                f"{per_tok * o['decode'] / bw_best:.0%} | {per_tok * m['decode'] / bw_best:.0%} | |")
    same = o["tokens"] == m["tokens"]
    goals = {
        "prefill 2048 >= 6.5x mlx-lm": _goal(o["prefill"].get(2048), m["prefill"].get(2048), 6.5),
        "decode >= 1.3x mlx-lm": _goal(o["decode"], m["decode"], 1.3),
        "GPU-graph primitives <= 0.6x mlx-lm": _at_most(mo, mm, 0.6),
        "GPU-graph kernel launches <= 0.6x mlx-lm": _at_most(lo, lm, 0.6),
    }
    extra = {"parts": parts, "same_tokens": same, "goals": goals}
    return "\n".join(rows), extra


def _at_most(a, b, x):
    return "met" if a <= x * b else f"missed ({a / b:.2f}x)"


def _goal(a, b, x):
    if not a or not b:
        return "not measured"
    return "met" if a >= x * b else f"missed ({a / b:.2f}x)"


def prims_table(res: dict) -> str:
    """Primitives of one decode step by kind, in the GPU graph."""
    o, m = res["ours"]["prims_metal"], res["mlx-lm"]["prims_metal"]
    kinds = sorted(set(o) | set(m), key=lambda k: -(o.get(k, 0) + m.get(k, 0)))
    rows = ["| primitive (GPU graph) | ours | mlx-lm |", "|---|---|---|"]
    rows += [f"| {k}{' (view)' if k in VIEWS else ''} | {o.get(k, 0)} | {m.get(k, 0)} |"
             for k in kinds]
    return "\n".join(rows)


def write_results(text: str, cmd: str):
    path = HERE / "RESULTS.md"
    body = path.read_text() if path.is_file() else "# Benchmark results\n"
    section = f"## End-to-end\n\nCommand: `{cmd.strip()}`\n\n{text}\n"
    pattern = re.compile(r"^## End-to-end\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(body):
        body = pattern.sub(lambda _: section + "\n", body)
    else:
        body = body.rstrip("\n") + "\n\n" + section
    path.write_text(body)
