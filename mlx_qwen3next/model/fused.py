"""Products of one input joined into one product.

A module lists in FUSED the projections it applies to the same input (a DeltaNet's
in_proj_qkvz and in_proj_ba; attention's q, k and v; the router and the shared
expert's gate; a SwiGLU's gate and up) and takes their outputs through `products`.
At load, `fuse` concatenates their weights along the outputs (quantized ones too:
their groups run along the inputs), so a decode step launches one product where
it launched several. A module with `fused_rows` also reorders the joined rows
(the DeltaNet: its per-head-group interleaving is undone once, not every call).
The checkpoint keeps the modules apart; training uses them so.
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
import mlx.nn as nn

QUANTIZATION = ("group_size", "bits", "mode")


class Fused(nn.Module):
    """Several projections of one owner as one module `proj` (a module, so that the CPU
    package can swap it); `names` and `sizes` are the parts' own, `outputs` the sizes
    that `split` cuts proj's output into (the parts', unless the rows were reordered)."""

    def __init__(self, proj: nn.Module, names, sizes, outputs=None):
        super().__init__()
        self.proj = proj
        self._names, self._sizes = tuple(names), tuple(sizes)
        outputs = tuple(outputs or sizes)
        self._cuts = tuple(sum(outputs[: i + 1]) for i in range(len(outputs) - 1))

    def split(self, out: mx.array) -> list:
        return mx.split(out, list(self._cuts), axis=-1)

    def parts(self, name: str, shape: tuple) -> list:
        """The (name, shape) of each part of proj's parameter `name` of `shape`."""
        axis = len(shape) - 2 if len(shape) > 1 else 0
        return [(f"{n}.{name}", shape[:axis] + (size,) + shape[axis + 1:])
                for n, size in zip(self._names, self._sizes)]


def products(owner: nn.Module, call: Callable) -> list:
    """call(m) for each module m that owner.FUSED names, in that order: one call on
    their fusion, split, once `fuse` has joined them."""
    if "fused" in owner:
        return owner["fused"].split(call(owner["fused"].proj))
    return [call(owner[n]) for n in owner.FUSED]


def projections(owner: nn.Module) -> list:
    """The modules that carry owner.FUSED's products: the fusion, or each of them."""
    return [owner["fused"].proj] if "fused" in owner else [owner[n] for n in owner.FUSED]


def fuse(model: nn.Module) -> nn.Module:
    """Join, in place, each module's FUSED projections that can be joined: same class,
    same quantization, same parameters. Each fusion is evaluated, and its parts freed,
    before the next, so memory grows by one group at most (if nothing else holds the
    parts: load_model drops its own references first)."""
    owners = [m for _, m in model.named_modules()
              if getattr(m, "FUSED", None) and all(n in m for n in m.FUSED)]
    for owner in owners:
        parts = [owner[n] for n in owner.FUSED]
        if not joinable(parts):
            continue
        rows, outputs = owner.fused_rows() if hasattr(owner, "fused_rows") else (None, None)
        proj = joined(parts, rows)
        mx.eval(proj.parameters())
        for n in owner.FUSED:
            del owner[n]
        owner["fused"] = Fused(proj, owner.FUSED, [p.weight.shape[-2] for p in parts], outputs)
        del parts
        mx.clear_cache()  # else the freed parts stay cached: the next fusion is larger
    return model


def joinable(parts: list) -> bool:
    from .switch import QuantizedSwitchLinear, SwitchLinear  # switch.py uses products

    first = parts[0]
    keys = sorted(first.parameters())
    return type(first) in (nn.Linear, nn.QuantizedLinear, SwitchLinear,
                           QuantizedSwitchLinear) and all(
        type(p) is type(first) and sorted(p.parameters()) == keys
        and all(getattr(p, a, None) == getattr(first, a, None) for a in QUANTIZATION)
        and all(p[k].dtype == first[k].dtype for k in keys)
        for p in parts[1:])


def joined(parts: list, rows=None) -> nn.Module:
    """A module of parts[0]'s class whose every parameter is the parts' concatenated
    along the outputs (axis -2 of weights, scales and biases; a bias's only axis),
    those output rows taken in the order `rows` if given."""
    first = parts[0]
    new = type(first).__new__(type(first))
    new.__dict__.update(first.__dict__)
    dict.update(new, first)
    for k in first.parameters():
        axis = -2 if first[k].ndim > 1 else -1
        new[k] = mx.concatenate([p[k] for p in parts], axis=axis)
        if rows is not None:
            new[k] = mx.take(new[k], rows, axis=axis)
    return new


def checkpoint_shapes(model: nn.Module) -> list:
    """(name, shape) of every parameter as the checkpoint holds it: fusions split back."""
    from mlx.utils import tree_flatten

    fusions = {path: m for path, m in model.named_modules() if isinstance(m, Fused)}
    out = []
    for k, v in tree_flatten(model.parameters()):
        owner, _, param = k.partition(".fused.proj.")
        if param:
            out += [(f"{owner}.{n}", list(s))
                    for n, s in fusions[f"{owner}.fused"].parts(param, tuple(v.shape))]
        else:
            out.append((k, list(v.shape)))
    return sorted(out)
