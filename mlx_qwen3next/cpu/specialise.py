"""The one load-time step that fits a model to MLX's CPU backend.

Modules are swapped by predicate, as nn.quantize does, each for a subclass with
the same parameters:
- nn.Linear -> BlockedLinear (HeadLinear for the lm_head), nn.Embedding -> HeadEmbedding
  (a tied lm_head);
- SwitchLinear -> CpuSwitchLinear, SwitchGLU -> GroupedSwitchGLU;
- nn.QuantizedLinear -> CpuQuantizedLinear, QuantizedSwitchLinear -> CpuQuantizedSwitchLinear;
- nn.SiLU -> PolySiLU, Attention -> BlockedCausalAttention;
and the delta rule takes the CPU policy. Not for training: the polynomial SiLU,
LAPACK's inverse and the lm_head's sgemv have no gradient.
"""

from __future__ import annotations

import mlx.nn as nn

from ..kernels import dispatch
from ..model.attention import Attention
from ..model.switch import QuantizedSwitchLinear, SwitchGLU, SwitchLinear
from .activations import PolySiLU
from .attention import BlockedCausalAttention
from .delta_rule import CPU_POLICY
from .experts import CpuSwitchLinear, GroupedSwitchGLU
from .gemv import HeadEmbedding, HeadLinear
from .products import BlockedLinear
from .quantized import CpuQuantizedLinear, CpuQuantizedSwitchLinear

SWAPS = (  # exact type -> the CPU subclass
    (nn.Linear, BlockedLinear),
    (nn.Embedding, HeadEmbedding),
    (SwitchLinear, CpuSwitchLinear),
    (nn.QuantizedLinear, CpuQuantizedLinear),
    (QuantizedSwitchLinear, CpuQuantizedSwitchLinear),
    (SwitchGLU, GroupedSwitchGLU),
    (nn.SiLU, PolySiLU),
    (Attention, BlockedCausalAttention),
)
HEAD = "lm_head"  # the one product a decode step runs outside the compiled layer steps
_TO_CPU = dict(SWAPS)
_HEAD_TO_CPU = _TO_CPU | {nn.Linear: HeadLinear}
_TO_PLAIN = {cpu: plain for plain, cpu in SWAPS} | {HeadLinear: nn.Linear}


def swapped(module: nn.Module, swaps: dict = _TO_CPU) -> nn.Module:
    """`module` as its CPU subclass (or per `swaps`), sharing its parameters and attributes."""
    cls = swaps.get(type(module))
    if cls is None:
        return module
    new = cls.__new__(cls)
    new.__dict__.update(module.__dict__)
    dict.update(new, module)
    return new


def unspecialise(model: nn.Module) -> nn.Module:
    """Undo `specialise`: the plain modules again (the delta-rule policy is left as it is)."""
    _swap_children(model, _TO_PLAIN)
    return model


def specialise(model: nn.Module) -> nn.Module:
    """Swap in the CPU modules (in place) and set the CPU delta-rule policy."""
    _swap_children(model)
    dispatch.set_policy(CPU_POLICY)
    return model


def _swap_children(module: nn.Module, swaps: dict = _TO_CPU):
    for name, child in module.children().items():
        if isinstance(child, nn.Module):
            _swap_children(child, swaps)
            head = name == HEAD and swaps is _TO_CPU
            module[name] = swapped(child, _HEAD_TO_CPU if head else swaps)
        elif isinstance(child, list):
            held = module[name]  # children() lists a copy
            for i, c in enumerate(held):
                if isinstance(c, nn.Module):
                    _swap_children(c, swaps)
                    held[i] = swapped(c, swaps)
