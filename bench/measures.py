"""What the end-to-end bench measures besides time: primitives per decode step,
memory bandwidth of this machine, and the bytes one decode token reads.
"""

from __future__ import annotations

import gc
import os
import re
import tempfile
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx.core)
import mlx.core as mx

from slice import shard_specs

VIEWS = frozenset({"Reshape", "Transpose", "Squeeze", "ExpandDims", "Slice", "Flatten",
                   "Unflatten", "Broadcast", "Split", "StopGradient", "AsStrided"})
FAST_OPS = ("rms_norm", "layer_norm", "rope", "scaled_dot_product_attention",
            "gated_delta_update")
# ops that are one primitive on a GPU but built from others on the CPU, by their label
ONE_KERNEL = {f"fast.{n}": (mx.fast, n) for n in FAST_OPS} | {"dequantize": (mx, "dequantize")}


def dot_labels(*outs) -> list[str]:
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "graph.dot")
        mx.export_to_dot(f, *outs)
        return re.findall(r'label ="([^"]+)", shape=rectangle', Path(f).read_text())


class FastOpCounter:
    """Counts mx.fast.* (and mx.dequantize) calls while building a graph, and how many
    primitives each expands to here (on the CPU they are built from their fallback ops;
    on Metal each is one primitive)."""

    def __init__(self):
        self.calls, self.expansion, self._kinds = Counter(), Counter(), {}
        self._tracing = 0  # inside a call of a function mx.compile made under the counter

    def __enter__(self):
        self._orig = {label: getattr(*at) for label, at in ONE_KERNEL.items()}
        for label, f in self._orig.items():
            setattr(*ONE_KERNEL[label], self._wrap(label, f))
        self._compile, mx.compile = mx.compile, self._traced_compile
        return self

    def __exit__(self, *exc):
        for label, f in self._orig.items():
            setattr(*ONE_KERNEL[label], f)
        mx.compile = self._compile

    def _traced_compile(self, fn, *args, **kwargs):
        """mx.compile whose functions mark their calls, so that an op traced inside one
        has its expansion counted compiled too (fused as it is in that graph); one
        built outside is counted as built."""
        compiled = self._compile(fn, *args, **kwargs)

        def call(*a, **k):
            self._tracing += 1
            try:
                return compiled(*a, **k)
            finally:
                self._tracing -= 1
        return call

    def _wrap(self, name, f):
        def opaque(*args, **kwargs):
            """f between barriers: on Metal the op is one kernel, so mx.compile must not
            fuse its fallback's first or last elementwise ops with their neighbours."""
            out = f(*map(_barrier, args), **{k: _barrier(v) for k, v in kwargs.items()})
            return type(out)(map(_barrier, out)) if isinstance(out, (list, tuple)) else _barrier(out)

        def call(*args, **kwargs):
            self.calls[name] += 1
            self.expansion.update(self._expand(name, opaque, args, kwargs))
            return opaque(*args, **kwargs)
        return call

    def _expand(self, name, f, args, kwargs) -> Counter:
        """The primitives, by kind, that one such call builds here."""
        ph = lambda a: mx.zeros(a.shape, a.dtype) if isinstance(a, mx.array) else a
        compiled = self._tracing > 0
        key = (name, compiled, tuple((a.shape, str(a.dtype)) if isinstance(a, mx.array)
                                     else repr(a) for a in list(args) + list(kwargs.values())))
        if key not in self._kinds:
            a2, k2 = [ph(a) for a in args], {k: ph(v) for k, v in kwargs.items()}
            mx.eval([a for a in a2 + list(k2.values()) if isinstance(a, mx.array)])
            fn = lambda *a: f(*a, **k2)
            out = (self._compile(fn) if compiled else fn)(*a2)
            outs = list(out) if isinstance(out, (list, tuple)) else [out]
            self._kinds[key] = kinds_of(dot_labels(*outs))
        return self._kinds[key]


def _barrier(a):
    """a itself behind a Depends node, which mx.compile neither fuses nor removes."""
    return mx.depends([a], [a])[0] if isinstance(a, mx.array) else a


def kinds_of(labels) -> Counter:
    return Counter("Compiled" if x.startswith("Compiled") else x for x in labels)


def count_primitives(r, cache, tok, on_metal: bool = False) -> Counter:
    """Primitive nodes in the graph of one decode step (the body with every cache array,
    then the lm_head),
    by kind: as built here, or `on_metal`, each mx.fast call one primitive in place of
    the ops it expands to here (traced inside the counter, compiled steps afresh, so
    that their mx.fast calls are seen)."""
    with FastOpCounter() if on_metal else nullcontext() as fast:
        r.retrace()
        kinds = Counter()
        # the body and the head one after the other: on the CPU our lm_head evaluates
        # its input itself (cpu/gemv.py), which would hide the body's graph
        hidden = r.body(tok, cache)
        outs = [hidden] + r.cache_arrays(cache)
        kinds += kinds_of(dot_labels(*outs))
        mx.eval(outs)
        logits = r.head(hidden)
        kinds += kinds_of(dot_labels(logits))
        mx.eval(logits)
    return as_on_metal(kinds, fast) if on_metal else kinds


def as_on_metal(kinds: Counter, fast: FastOpCounter) -> Counter:
    """A graph's primitives by kind, each mx.fast call that `fast` saw one primitive in
    place of the ops it expanded to here."""
    return kinds - fast.expansion + fast.calls


def launches(kinds: Counter) -> int:
    """Primitives that run a kernel: all but the views, which on Metal change an array's
    shape or strides without a launch (a copy they force shows up as its own node)."""
    return sum(c for k, c in kinds.items() if k not in VIEWS)


def bandwidth(best: dict | None = None) -> dict:
    """GB/s, best of several: a 256 MiB float32 copy (read + write counted; MLX's CPU
    elementwise op) and a 256 MiB float32 gemv (read; OpenBLAS, all cores).
    Pass the previous result to keep the best of both calls (the machine is shared)."""
    best = dict(best or {"copy": 0.0, "gemv": 0.0})
    size = 256 << 20
    a = mx.random.uniform(shape=(size // 4,))
    x = mx.random.uniform(shape=(2048,))
    mx.eval(a, x)
    w = a.reshape(-1, 2048)
    for _ in range(6):
        t = time.perf_counter()
        mx.eval(a * 1.0)
        best["copy"] = max(best["copy"], 2 * size / (time.perf_counter() - t) / 1e9)
        t = time.perf_counter()
        mx.eval(w @ x)
        best["gemv"] = max(best["gemv"], size / (time.perf_counter() - t) / 1e9)
    del a, w
    gc.collect()
    mx.clear_cache()
    return best


# --------------------------------------------------------------------------- roofline


def decode_bytes(cfg: dict, kv_len: int, bytes_per_param: float = 4.0,
                 gate_bytes: float = 4.0) -> dict:
    """Bytes one decode step reads, by part (weights at `bytes_per_param`; state fp32)."""
    H = cfg["hidden_size"]
    E, k = cfg["num_experts"], cfg["num_experts_per_tok"]
    parts = Counter()
    spec = {n: s for sh in shard_specs(cfg, mtp=False).values() for n, (s, _) in sh.items()}
    for name, shape in spec.items():
        n = 1
        for d in shape:
            n *= d
        if name == "model.embed_tokens.weight":
            parts["embedding row"] += H * bytes_per_param
        elif name == "lm_head.weight":
            parts["lm_head"] += n * bytes_per_param
        elif ".switch_mlp." in name:
            parts["routed experts"] += n * k / E * bytes_per_param
        elif name.endswith(("mlp.gate.weight", "shared_expert_gate.weight")):
            parts["router + shared gate"] += n * gate_bytes
        elif ".shared_expert." in name:
            parts["shared expert"] += n * bytes_per_param
        elif ".linear_attn." in name:
            parts["DeltaNet weights"] += n * (4 if len(shape) == 1 else bytes_per_param)
        elif ".self_attn." in name:
            parts["attention weights"] += n * (4 if len(shape) == 1 else bytes_per_param)
        else:
            parts["norms"] += n * 4
    nv, dv, dk = (cfg[x] for x in ("linear_num_value_heads", "linear_value_head_dim",
                                   "linear_key_head_dim"))
    conv = 2 * cfg["linear_num_key_heads"] * dk + nv * dv
    L = cfg["num_hidden_layers"]
    n_lin = sum((i + 1) % cfg["full_attention_interval"] != 0 for i in range(L))
    parts["DeltaNet state (r+w)"] = n_lin * 2 * (nv * dv * dk + (cfg["linear_conv_kernel_dim"] - 1) * conv) * 4
    kv = 2 * cfg["num_key_value_heads"] * cfg["head_dim"] * 4
    parts["KV cache"] = (L - n_lin) * kv * (kv_len + 1)
    return dict(parts)


# --------------------------------------------------------------------------- run
