"""The one mapping from the Hub checkpoint's tensors to this model's (mlx-lm's layout),
shared by the loader and the converter (quantize/).

- `*.mlp.experts.E.{gate,up,down}_proj.weight`, one tensor per expert, are stacked
  into `*.mlp.switch_mlp.{gate,up,down}_proj.weight` [E, out, in] ("stack", row E);
- `conv1d.weight` [C, 1, K] becomes MLX's [C, K, 1] ("conv");
- zero-centred norm weights, applied as 1 + w, get the 1 added ("norm"); the gated
  `linear_attn.norm` is a plain weight;
- everything else keeps its name and values ("copy").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from ..config import ModelConfig
from ..model.norms import is_zero_centred

EXPERT = re.compile(r"^(.+\.mlp)\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


@dataclass(frozen=True)
class Mapped:
    name: str  # the tensor's name in the model
    op: str  # "copy" | "stack" | "conv" | "norm"
    expert: Optional[int] = None  # the row of a stacked tensor


def hub_to_mlx(name: str, shape: tuple) -> Mapped:
    """Where the Hub tensor `name` of `shape` goes, and how it is transformed."""
    m = EXPERT.match(name)
    if m:
        return Mapped(f"{m[1]}.switch_mlp.{m[3]}.weight", "stack", int(m[2]))
    if name.endswith("conv1d.weight") and len(shape) == 3 and shape[1] == 1:
        return Mapped(name, "conv")
    if is_zero_centred(name) and len(shape) == 1:
        return Mapped(name, "norm")
    return Mapped(name, "copy")


def model_tensors(cfg: ModelConfig, mtp: bool) -> dict[str, tuple]:
    """Every tensor the (float) model needs, by name, with its shape. Nothing is
    allocated: the parameters stay unevaluated."""
    from mlx.utils import tree_flatten

    from ..model import Model

    return {k: tuple(v.shape) for k, v in tree_flatten(Model(cfg, mtp=mtp).parameters())}
