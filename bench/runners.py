"""Ours and mlx-lm's qwen3_next behind one small interface, so the bench runs the same loop on both.

Both take the same checkpoint folder (see slice.py). A prefill runs the model
body on every prompt token into a fresh cache and the lm_head on the last
position only, which is what generation needs (and what mlx-lm's generate_step
does); a decode step is the whole model on one token.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager, nullcontext
from pathlib import Path

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx.core, for both sides)
import mlx.core as mx


class Runner:
    name = "?"

    def __init__(self, path):
        self.path = Path(path)
        self.model = None

    # -- implemented per side ---------------------------------------------
    def make_cache(self):
        raise NotImplementedError

    def body(self, ids: mx.array, cache) -> mx.array:
        """Post-final-norm hidden states [B, T, hidden]."""
        raise NotImplementedError

    def head(self, hidden: mx.array) -> mx.array:
        raise NotImplementedError

    def cache_arrays(self, cache) -> list:
        """Every array the cache holds (evaluated with each step, as generation does)."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------
    def prefill(self, ids: mx.array, cache) -> mx.array:
        """Logits of the last prompt position [B, 1, vocab]."""
        return self.head(self.body(ids, cache)[:, -1:])

    def step(self, ids: mx.array, cache) -> mx.array:
        return self.head(self.body(ids, cache))

    def as_on_metal(self):
        """Context in which step() builds the graph Metal would run (for counting it)."""
        return nullcontext()

    def retrace(self):
        """Forget compiled steps, so that the next step() traces its graph again."""

    def free(self):
        self.model = None
        gc.collect()
        mx.clear_cache()


class Ours(Runner):
    name = "ours"

    def __init__(self, path, mtp: bool = False):
        super().__init__(path)
        from mlx_qwen3next import load_model

        self.model = load_model(self.path, mtp=mtp)

    def make_cache(self):
        return self.model.make_cache()

    def body(self, ids, cache):
        return self.model.hidden(ids, cache)

    def head(self, hidden):
        return self.model.logits(hidden)

    @contextmanager
    def as_on_metal(self):
        """The graph a GPU runs: the plain modules (the CPU swaps undone) and the delta
        rule through mx.fast.gated_delta_update (dispatch.FAST), freshly traced."""
        from mlx_qwen3next.cpu.specialise import specialise, unspecialise
        from mlx_qwen3next.kernels import dispatch

        unspecialise(self.model)
        self.model.reset_compiled()
        try:
            with dispatch.using(dispatch.FAST):
                yield
        finally:
            specialise(self.model)
            self.model.reset_compiled()

    def retrace(self):
        self.model.reset_compiled()

    def cache_arrays(self, cache):
        from mlx_qwen3next.cache import KVCache

        out = []
        for c in cache:
            if isinstance(c, KVCache):
                out += [c.keys, c.values]
            else:
                out += [c.conv_state, c.recurrent_state]
        return [a for a in out if a is not None]


class MlxLm(Runner):
    name = "mlx-lm"

    def __init__(self, path, share: "Ours | None" = None):
        """mlx-lm's own loader on `path` (strict: every tensor of model*.safetensors must
        match its module tree). With `share`, the loader runs lazily and the model then
        points at the arrays `share` loaded from the same files (same names, shapes and
        dtypes, checked), so both models can stay resident in mostly one copy of the
        weights; the products ours joined at load (model/fused.py) mlx-lm reads itself."""
        super().__init__(path)
        from mlx.utils import tree_flatten
        from mlx_lm.utils import load_model
        from mlx_qwen3next.model.fused import checkpoint_shapes

        self.model, _ = load_model(self.path, lazy=share is not None, strict=True)
        if share is not None:
            theirs = dict(tree_flatten(self.model.parameters()))
            names = {k for k, _ in checkpoint_shapes(share.model) if not k.startswith("mtp.")}
            if set(theirs) != names:
                raise ValueError(f"parameter names differ: {sorted(set(theirs) ^ names)[:5]}")
            ours = {k: v for k, v in tree_flatten(share.model.parameters()) if k in theirs}
            for k, v in ours.items():
                if v.shape != theirs[k].shape or v.dtype != theirs[k].dtype:
                    raise ValueError(f"{k}: {theirs[k].shape} {theirs[k].dtype} vs {v.shape} {v.dtype}")
            self.model.load_weights(list(ours.items()), strict=False)
            mx.eval(self.model.parameters())
        self.model.eval()

    def make_cache(self):
        return self.model.make_cache()

    def body(self, ids, cache):
        return self.model.model(ids, cache)

    def head(self, hidden):
        return self.model.lm_head(hidden)

    @contextmanager
    def as_on_metal(self):
        """On Metal, mlx-lm's delta rule is its own kernel, one launch per layer
        (gated_delta_kernel); here mx.fast.gated_delta_update stands in for it, so
        the graph counts it as one primitive, as Metal runs it."""
        from mlx_lm.models import gated_delta

        ops = gated_delta.gated_delta_ops

        def one_kernel(q, k, v, g, beta, state=None, mask=None):
            return mx.fast.gated_delta_update(q, k, v, g, beta, state, mask)

        gated_delta.gated_delta_ops = one_kernel
        try:
            yield
        finally:
            gated_delta.gated_delta_ops = ops

    def cache_arrays(self, cache):
        from mlx_lm.models.cache import ArraysCache

        out = []
        for c in cache:
            if isinstance(c, ArraysCache):
                out += list(c.cache)
            else:
                out += [c.keys, c.values]
        return [a for a in out if a is not None]


RUNNERS = {"ours": Ours, "mlx-lm": MlxLm}
