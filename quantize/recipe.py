"""Which tensor gets which bits: named recipes and fit-to-memory.

Every quantizable tensor (linear and embedding weights, stacked experts) has a
role, read from its module path. A recipe gives bits per role; routed experts can
also get bits per layer (mixed recipes, fit-to-memory). The router (`mlp.gate`)
and `shared_expert_gate` stay at 8 bits in every recipe: 4 bits corrupts routing.
Norms, A_log, dt_bias and conv1d are never quantized.

- `4bit` (default): everything 4-bit, group 64; router and shared_expert_gate 8-bit.
- `8bit`: everything 8-bit, group 64.
- `mixed-3-4`: routed experts 3-bit, except `down_proj` in the more sensitive
  layers (the first and last eighth, and every third layer between, as mlx-lm's
  mixed recipes pick them) at 4-bit; everything else 4-bit.
- fit-to-memory (`max_memory`): start from the recipe and lower routed experts a
  layer at a time (the MTP layer first, then middle layers before the outer ones)
  to 3 bits, then 2, until the converted weights fit the budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from .errors import ConvertError

VALID_BITS = (2, 3, 4, 5, 6, 8)
VALID_GROUP_SIZES = (32, 64, 128)
GATE_BITS = 8


@dataclass(frozen=True)
class QuantSpec:
    bits: int
    group_size: int

    def as_config(self) -> dict:
        return {"group_size": self.group_size, "bits": self.bits, "mode": "affine"}


def role(module: str) -> str:
    if ".switch_mlp." in module:
        return "experts"
    if module.endswith(".mlp.gate") or module.endswith(".shared_expert_gate"):
        return "gate"
    if "embed_tokens" in module:
        return "embed"
    if module == "lm_head":
        return "lm_head"
    return "other"


def layer_of(module: str) -> Optional[str]:
    m = re.match(r"^((?:model|mtp)\.layers\.\d+)\.", module)
    return m[1] if m else None


def sensitive_layers(num_layers: int) -> set[int]:
    """Layers that keep more bits in mixed recipes (mlx-lm's choice)."""
    return {
        i
        for i in range(num_layers)
        if i < num_layers // 8 or i >= 7 * num_layers // 8 or (i - num_layers // 8) % 3 == 2
    }


@dataclass(frozen=True)
class Recipe:
    name: str
    group_size: int
    bits: dict  # role -> bits ("experts", "gate", "embed", "lm_head", "other")
    expert_bits: dict = field(default_factory=dict)  # layer -> bits for its routed experts
    down_proj_bits: dict = field(default_factory=dict)  # layer -> bits for experts' down_proj

    def spec(self, module: str) -> QuantSpec:
        r, layer = role(module), layer_of(module)
        bits = self.bits[r]
        if r == "experts" and layer in self.expert_bits:
            bits = self.expert_bits[layer]
        elif r == "experts" and module.endswith("down_proj") and layer in self.down_proj_bits:
            bits = self.down_proj_bits[layer]
        return QuantSpec(bits, self.group_size)


RECIPES = ("4bit", "8bit", "mixed-3-4")
ALIASES = {"mixed_3_4": "mixed-3-4"}  # mlx-lm's spelling


def make_recipe(
    name: str = "4bit",
    num_layers: int = 48,
    bits: Optional[int] = None,
    group_size: Optional[int] = None,
) -> Recipe:
    """A named recipe; `bits` makes every tensor but the gates that many bits,
    `group_size` sets the group size of all."""
    name = ALIASES.get(name, name)
    if name not in RECIPES:
        raise ConvertError(f"unknown recipe {name!r} (choose from {', '.join(RECIPES)})")
    if bits is not None and bits not in VALID_BITS:
        raise ConvertError(f"bits must be one of {', '.join(map(str, VALID_BITS))}, not {bits}")
    gs = 64 if group_size is None else group_size
    if gs not in VALID_GROUP_SIZES:
        raise ConvertError(
            f"group size must be one of {', '.join(map(str, VALID_GROUP_SIZES))}, not {gs}"
        )
    if bits is not None and name == "mixed-3-4":
        raise ConvertError("recipe mixed-3-4 sets its own bits; --bits applies to 4bit only")
    if bits is not None and name == "8bit" and bits != 8:
        raise ConvertError(f"recipe 8bit writes 8 bits, not {bits}; use --bits {bits} alone")
    if bits is not None:
        name = f"{bits}bit"  # --bits N: every tensor but the gates at N bits, named so
    base = {"8bit": 8, "mixed-3-4": 4}.get(name, 4) if bits is None else bits
    roles = {"experts": base, "gate": max(base, GATE_BITS), "embed": base, "lm_head": base, "other": base}
    down = {}
    if name == "mixed-3-4" and bits is None:
        roles["experts"] = 3
        down = {f"model.layers.{i}": 4 for i in sensitive_layers(num_layers)}
        down["mtp.layers.0"] = 4
    return Recipe(name, gs, roles, down_proj_bits=down)


def fit_to_memory(
    recipe: Recipe,
    budget: int,
    layers: list[str],
    num_layers: int,
    size_of: Callable[[Recipe], int],
) -> Recipe:
    """Lower routed-expert bits layer by layer until `size_of(recipe) <= budget`."""
    if size_of(recipe) <= budget:
        return recipe
    keep = {f"model.layers.{i}" for i in sensitive_layers(num_layers)}
    mid = (num_layers - 1) / 2

    def priority(layer: str):
        if layer.startswith("mtp."):
            return (0, 0)
        i = int(layer.split(".")[-1])
        return (2 if layer in keep else 1, abs(i - mid))

    order = sorted(layers, key=priority)
    current = recipe
    for bits in (3, 2):
        for layer in order:
            if current.spec(f"{layer}.mlp.switch_mlp.up_proj").bits <= bits:
                continue
            expert_bits = dict(current.expert_bits, **{layer: bits})
            current = replace(current, expert_bits=expert_bits)
            if size_of(current) <= budget:
                return current
    raise ConvertError(
        f"cannot fit in {format_size(budget)}: the smallest choice (2-bit experts) "
        f"is {format_size(size_of(current))}"
    )


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text) -> int:
    """'40GB' -> 40e9 bytes ('GiB' for powers of two); ints pass through."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m[2].lower() not in _UNITS:
        raise ConvertError(f"cannot read the size {text!r} (try e.g. 40GB)")
    return int(float(m[1]) * _UNITS[m[2].lower()])


def format_size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"
