"""What-if: how many primitives and launches a decode step would save with weights fused
across modules (in_proj_qkvz with in_proj_ba; q, k and v; the router with the shared-expert
gate and the shared expert's gate and up; the experts' gate with up).

Counting only, on the e2e slice, float32: each group's products become one product over
the concatenated weights, split after, patched in place of the modules' own calls. The
model itself does not fuse them: the fused tensors would change the parameter tree that
checkpoint validation, the prompt cache's fingerprint and mlx-lm's loader read.

    python bench/fused_graph.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import mlx_qwen3next  # noqa: E402,F401  (OpenBLAS before mlx.core)
import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402

from e2e import ensure_slice  # noqa: E402
from graph import counted_step  # noqa: E402
from measures import launches  # noqa: E402
from runners import MlxLm, Ours  # noqa: E402
from mlx_qwen3next.model.switch import SwitchLinear  # noqa: E402


class Fused:
    """One product over the modules' concatenated weights, computed once per input and
    split into each module's part."""

    def __init__(self, mods):
        sizes = [m.weight.shape[-2] for m in mods]
        self.cuts = [sum(sizes[: i + 1]) for i in range(len(sizes) - 1)]
        self.mod = SwitchLinear(1, 1, 1) if isinstance(mods[0], SwitchLinear) else nn.Linear(
            1, 1, bias=False)
        self.mod.weight = mx.concatenate([m.weight for m in mods], axis=-2)
        mx.eval(self.mod.weight)
        self.key = self.parts = None

    def part(self, i):
        def call(x, *rest):
            if self.key is not x:
                self.key, self.parts = x, mx.split(self.mod(x, *rest), self.cuts, axis=-1)
            return self.parts[i]
        return call


def fuse(*owned):
    """Replace each (owner, name) module's call by its part of one fused product."""
    f = Fused([getattr(o, n) for o, n in owned])
    for i, (o, n) in enumerate(owned):
        object.__setattr__(o, n, f.part(i))


def fuse_model(model):
    for layer in model.layers:
        if layer.is_linear:
            fuse((layer.linear_attn, "in_proj_qkvz"), (layer.linear_attn, "in_proj_ba"))
        else:
            fuse(*((layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj")))
        moe = layer.mlp
        fuse((moe, "gate"), (moe, "shared_expert_gate"),
             (moe.shared_expert, "gate_proj"), (moe.shared_expert, "up_proj"))
        fuse((moe.switch_mlp, "gate_proj"), (moe.switch_mlp, "up_proj"))


def main():
    path = ensure_slice(Path("/tmp/qwen3next_e2e"), [4], rebuild=False)[4]
    ids = mx.arange(1, 9)[None]
    ours = Ours(path)
    plain_logits = ours.model(ids, ours.model.make_cache())
    plain = counted_step(ours)
    fuse_model(ours.model)
    ours.retrace()
    diff = (ours.model(ids, ours.model.make_cache()) - plain_logits).abs().max().item()
    fused = counted_step(ours)
    ours.free()
    theirs = MlxLm(path)
    peer = counted_step(theirs)
    print("| one decode step, GPU graph, float32 | primitives | launches |\n|---|---|---|")
    for name, k in (("ours", plain), ("ours, weights fused", fused), ("mlx-lm", peer)):
        a, b = sum(k.values()), launches(k)
        print(f"| {name} | {a} ({a / sum(peer.values()):.2f}x) | {b} ({b / launches(peer):.2f}x) |")
    print(f"\nlogits, fused against not: max difference {diff:.1e}")


if __name__ == "__main__":
    main()
