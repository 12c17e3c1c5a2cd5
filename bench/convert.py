"""Conversion memory and time at the real layer size, ours vs mlx_lm.convert.

Writes bf16 checkpoints in the original Hub layout with the real per-layer sizes
(hidden 2048, 512 experts of 512 stored one tensor per expert, real DeltaNet and
attention dims) at 2 and 4 layers, then converts each to 4-bit with ours and with
mlx_lm.convert, each run in its own subprocess so that its peak RSS is its own
(os.wait4). The vocabulary is cut to 16384 and the MTP head is left out, to save
disk and time; neither touches how memory grows with depth.

    python bench/convert.py [--workdir DIR] [--layers 2 4] [--keep] [--warm]

Goals: ours at 4 layers <= 1.1x ours at 2 layers; ours <= 1.5x one layer's bf16
size + 1 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx)
from mlx_qwen3next.quantize.st_io import Entry, ShardWriter
from mlx_qwen3next.testing.tiny import tiny_config, write_checkpoint

VOCAB = 16384
REAL = dict(
    vocab_size=VOCAB, hidden_size=2048, intermediate_size=5120, num_attention_heads=16,
    num_key_value_heads=2, head_dim=256, linear_key_head_dim=128, linear_value_head_dim=128,
    linear_num_key_heads=16, linear_num_value_heads=32, moe_intermediate_size=512,
    shared_expert_intermediate_size=512, num_experts=512, num_experts_per_tok=10,
)


def real_shapes(cfg: dict) -> dict[str, tuple]:
    """Names and shapes of the original checkpoint at `cfg` (no MTP head)."""
    H, E, I = cfg["hidden_size"], cfg["num_experts"], cfg["moe_intermediate_size"]
    nk, nv, dk, dv = (cfg[k] for k in ("linear_num_key_heads", "linear_num_value_heads",
                                       "linear_key_head_dim", "linear_value_head_dim"))
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    S = cfg["shared_expert_intermediate_size"]
    out = {"model.embed_tokens.weight": (cfg["vocab_size"], H)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        out[f"{p}.input_layernorm.weight"] = out[f"{p}.post_attention_layernorm.weight"] = (H,)
        if (i + 1) % 4:
            a = f"{p}.linear_attn"
            out.update({f"{a}.in_proj_qkvz.weight": (2 * nk * dk + 2 * nv * dv, H),
                        f"{a}.in_proj_ba.weight": (2 * nv, H),
                        f"{a}.conv1d.weight": (2 * nk * dk + nv * dv, 1, 4),
                        f"{a}.dt_bias": (nv,), f"{a}.A_log": (nv,), f"{a}.norm.weight": (dv,),
                        f"{a}.out_proj.weight": (H, nv * dv)})
        else:
            a = f"{p}.self_attn"
            out.update({f"{a}.q_proj.weight": (2 * nh * hd, H), f"{a}.k_proj.weight": (nkv * hd, H),
                        f"{a}.v_proj.weight": (nkv * hd, H), f"{a}.o_proj.weight": (H, nh * hd),
                        f"{a}.q_norm.weight": (hd,), f"{a}.k_norm.weight": (hd,)})
        m = f"{p}.mlp"
        out[f"{m}.gate.weight"] = (E, H)
        for e in range(E):
            for proj, shape in (("gate_proj", (I, H)), ("up_proj", (I, H)), ("down_proj", (H, I))):
                out[f"{m}.experts.{e}.{proj}.weight"] = shape
        for proj, shape in (("gate_proj", (S, H)), ("up_proj", (S, H)), ("down_proj", (H, S))):
            out[f"{m}.shared_expert.{proj}.weight"] = shape
        out[f"{m}.shared_expert_gate.weight"] = (1, H)
    out["model.norm.weight"] = (H,)
    out["lm_head.weight"] = (cfg["vocab_size"], H)
    return out


def write_source(path: Path, layers: int) -> int:
    """A bf16 checkpoint with random weights, streamed to disk; returns its size."""
    cfg = tiny_config(**REAL, num_hidden_layers=layers)
    cfg.pop("num_nextn_predict_layers", None)
    names = real_shapes(cfg)
    entries = [Entry(n, "BF16", s) for n, s in names.items()]
    path.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(path, entries, 4 * 10**9)
    rng = np.random.default_rng(0)
    pool = (rng.standard_normal(32 * 2**20, dtype=np.float32) * 0.02).view(np.uint32)
    pool = (pool >> 16).astype(np.uint16)  # bf16 bits
    import mlx.core as mx

    for e in entries:
        n = int(np.prod(e.shape))
        start = int(rng.integers(0, pool.size - n)) if n < pool.size else 0
        data = np.resize(pool[start:], n) if n > pool.size - start else pool[start : start + n]
        writer.write(e.name, mx.array(data.reshape(e.shape)).view(mx.bfloat16))
    writer.close()
    index = {"metadata": {"total_size": writer.total_bytes}, "weight_map": writer.weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    tiny = write_checkpoint(path / "_tok", tiny_config(), num_shards=1)
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(tiny / f, path / f)
    shutil.rmtree(tiny)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    return writer.total_bytes


def drop_page_cache() -> bool:
    """Start each run with the source on disk, not in memory (root only)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def run(cmd: list[str], cold: bool) -> tuple[float, float, int]:
    """(seconds, peak RSS in GB, return code) of one subprocess."""
    if cold and not drop_page_cache():
        print("  cannot drop the page cache (not root): timings are warm", file=sys.stderr)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t0
    err = p.stderr.read().decode()[-500:]
    code = os.waitstatus_to_exitcode(status)
    if code:
        print(f"  failed ({code}): {err}", file=sys.stderr)
    return seconds, usage.ru_maxrss * 1024 / 1e9, code


OURS = "import mlx_qwen3next; from mlx_qwen3next.quantize import convert; convert({s!r}, {d!r}, progress=False)"
MLX_LM = "from mlx_lm.convert import convert; convert({s!r}, {d!r}, quantize=True, q_group_size=64, q_bits=4)"


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/work/bench-convert")
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--warm", action="store_true", help="do not drop the page cache before runs")
    args = ap.parse_args()
    work = Path(args.workdir)
    rows, ours_peak, layer_gb = [], {}, None
    for layers in args.layers:
        src = work / f"src-{layers}"
        shutil.rmtree(src, ignore_errors=True)
        size = write_source(src, layers)
        non_layer = 2 * VOCAB * 2048 * 2 + 2048 * 2
        layer_gb = (size - non_layer) / layers / 1e9
        for tool, code in (("ours", OURS), ("mlx_lm.convert", MLX_LM)):
            dst = work / f"out-{layers}-{tool}"
            shutil.rmtree(dst, ignore_errors=True)
            sec, peak, rc = run([sys.executable, "-c", code.format(s=str(src), d=str(dst))], not args.warm)
            out_gb = dir_size(dst) / 1e9 if rc == 0 else float("nan")
            rows.append((layers, size / 1e9, tool, sec, peak, out_gb, rc))
            if tool == "ours":
                ours_peak[layers] = peak
            shutil.rmtree(dst, ignore_errors=True)
            print(f"{layers} layers, {tool}: {sec:.1f} s, peak RSS {peak:.2f} GB", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(src, ignore_errors=True)
    cache = "warm page cache" if args.warm else "page cache dropped before each run"
    print(f"\nOne layer in bf16: {layer_gb:.2f} GB; vocab cut to {VOCAB}, no MTP head; {cache}.\n")
    print("| layers | source (GB) | converter | time (s) | peak RSS (GB) | output (GB) |")
    print("|---|---|---|---|---|---|")
    for layers, src_gb, tool, sec, peak, out_gb, rc in rows:
        note = "" if rc == 0 else f" (exit {rc})"
        print(f"| {layers} | {src_gb:.2f} | {tool}{note} | {sec:.1f} | {peak:.2f} | {out_gb:.2f} |")
    lo, hi = min(ours_peak), max(ours_peak)
    if lo != hi:
        growth = ours_peak[hi] / ours_peak[lo]
        print(f"\nours: peak at {hi} layers / at {lo} layers = {growth:.2f} (goal <= 1.10)")
    limit = 1.5 * layer_gb + 1
    print(f"ours: max peak {max(ours_peak.values()):.2f} GB vs 1.5 x layer + 1 GB = {limit:.2f} GB")


if __name__ == "__main__":
    main()
