"""The converted tensors: which source tensors make each one and how
(mlx_qwen3next.checkpoints.names, the mapping the loader uses too), and the arrays
each is stored as. MTP weights (`mtp.*`) go to their own files (`mtp-*.safetensors`),
which mlx-lm's `model*.safetensors` glob skips.

Every output tensor can be produced in row ranges (experts for stacked tensors),
which is what keeps conversion memory bounded by a chunk, not a layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import ConvertError
from .recipe import QuantSpec
from .st_io import Entry, SourceReader, TensorInfo, itemsize
from mlx_qwen3next.checkpoints.names import hub_to_mlx
@dataclass
class OutTensor:
    """One converted tensor: made from `sources` by `op`, maybe quantized."""

    name: str
    sources: list
    op: str  # "copy" | "stack" | "conv" | "norm"
    shape: tuple  # the float (unquantized) output shape
    dtype: str  # safetensors code of the output: the source's, float32 for the norms
    quant: Optional[QuantSpec] = None

    @property
    def module(self) -> str:
        return self.name[: -len(".weight")] if self.name.endswith(".weight") else self.name

    @property
    def quantizable(self) -> bool:
        return (
            self.name.endswith(".weight")
            and len(self.shape) >= 2
            and self.op in ("copy", "stack")
        )

    @property
    def unit(self) -> str:
        """The layer (or top-level module) this tensor belongs to."""
        parts = self.name.split(".")
        return ".".join(parts[:3]) if "layers" in parts[:2] else ".".join(parts[:2])

    @property
    def num_params(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def source_bytes(self) -> int:
        return self.num_params * itemsize(self.dtype)

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def row_bytes(self) -> int:
        return self.source_bytes // self.rows

    def entries(self, quant: Optional[QuantSpec] = None) -> list[Entry]:
        """The arrays this tensor is stored as (weight, scales, biases if quantized)."""
        quant = quant or self.quant
        prefix = "mtp" if self.name.startswith("mtp.") else "model"
        if quant is None:
            return [Entry(self.name, self.dtype, self.shape, prefix)]
        *lead, in_dim = self.shape
        lead = tuple(lead)
        return [
            Entry(f"{self.module}.weight", "U32", lead + (in_dim * quant.bits // 32,), prefix),
            Entry(f"{self.module}.scales", self.dtype, lead + (in_dim // quant.group_size,), prefix),
            Entry(f"{self.module}.biases", self.dtype, lead + (in_dim // quant.group_size,), prefix),
        ]

    def nbytes(self, quant: Optional[QuantSpec] = None) -> int:
        return sum(e.nbytes for e in self.entries(quant))

    def prefetch(self, reader: SourceReader, lo: int, hi: int):
        if self.op == "stack":
            for s in self.sources[lo:hi]:
                reader.prefetch(s)
        else:
            reader.prefetch(self.sources[0], lo, hi)

    def read(self, reader: SourceReader, lo: int, hi: int):
        """Rows lo:hi of the converted (float) tensor."""
        import mlx.core as mx

        if self.op == "stack":
            return mx.stack([reader.read(s) for s in self.sources[lo:hi]])
        w = reader.read(self.sources[0], lo, hi)
        if self.op == "conv":
            return mx.swapaxes(w, 1, 2)
        if self.op == "norm":  # kept in float32: 1 + w in bf16 would round w away
            return w.astype(mx.float32) + 1.0
        return w


def plan_tensors(tensors: dict[str, TensorInfo]) -> list[OutTensor]:
    """The converted tensors, in writing order (layer by layer)."""
    if any(".switch_mlp." in k for k in tensors):
        raise ConvertError(
            "the source is already in MLX layout (switch_mlp keys); "
            "convert the original Hugging Face checkpoint"
        )
    experts: dict[str, dict[int, str]] = {}
    out: list[OutTensor] = []
    for name, info in tensors.items():
        to = hub_to_mlx(name, info.shape)
        if to.op == "stack":
            experts.setdefault(to.name, {})[to.expert] = name
            continue
        shape = info.shape
        if to.op == "conv":
            c, _, k = shape
            shape = (c, k, 1)
        dtype = "F32" if to.op == "norm" else info.dtype
        out.append(OutTensor(to.name, [name], to.op, shape, dtype))
    for stacked, by_index in experts.items():
        n = len(by_index)
        where = stacked.replace(".switch_mlp.", ".experts: ").removesuffix(".weight")
        if sorted(by_index) != list(range(n)):
            raise ConvertError(f"{where} is missing for some experts")
        names = [by_index[e] for e in range(n)]
        shapes = {tensors[s].shape for s in names}
        dtypes = {tensors[s].dtype for s in names}
        if len(shapes) != 1 or len(dtypes) != 1:
            raise ConvertError(f"{where} shapes or dtypes differ between experts")
        out.append(OutTensor(stacked, names, "stack", (n,) + shapes.pop(), dtypes.pop()))
    return sorted(out, key=lambda t: _order(t.name))


def _order(name: str):
    """Embedding first, then layers by number, then the rest; MTP last."""
    parts = name.split(".")
    head = 3 if parts[0] == "mtp" else (1 if "layers" in parts[:2] else (0 if "embed" in name else 2))
    nums = tuple(int(p) for p in parts if p.isdigit())
    return (head, nums, name)
