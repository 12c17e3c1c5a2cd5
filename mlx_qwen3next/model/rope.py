"""Partial rotary embedding (NeoX rotate-half on the first rotary_dim dims), with YaRN.

Frequencies follow transformers' rope initialisation so that long-context
scaling matches the reference exactly; mx.fast.rope applies them.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn


def default_inv_freq(dims: int, base: float) -> mx.array:
    return 1.0 / (base ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims))


def yarn_inv_freq(dims: int, base: float, scaling: dict, max_positions: int):
    """YaRN inverse frequencies and attention factor, as transformers computes them."""
    factor = float(scaling["factor"])
    original = scaling.get("original_max_position_embeddings") or max_positions
    beta_fast = scaling.get("beta_fast") or 32
    beta_slow = scaling.get("beta_slow") or 1
    mscale = scaling.get("attention_factor")
    if mscale is None:
        mscale = _yarn_mscale(factor, scaling.get("mscale"), scaling.get("mscale_all_dim"))

    def correction_dim(rotations):
        return dims * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dims - 1)
    if low == high:
        high += 0.001
    ramp = mx.clip((mx.arange(dims // 2, dtype=mx.float32) - low) / (high - low), 0, 1)
    extrapolation = 1.0 - ramp
    pos_freqs = base ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims)
    inv_interp, inv_extrap = 1.0 / (factor * pos_freqs), 1.0 / pos_freqs
    inv_freq = inv_interp * (1 - extrapolation) + inv_extrap * extrapolation
    return inv_freq, float(mscale)


def _yarn_mscale(factor, mscale=None, mscale_all_dim=None) -> float:
    def get(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if mscale and mscale_all_dim:
        return get(factor, mscale) / get(factor, mscale_all_dim)
    return get(factor)


class PartialRoPE(nn.Module):
    """Rotate the first `dims` features of [B, heads, T, head_dim] inputs."""

    def __init__(self, dims: int, base: float, scaling: dict | None = None,
                 max_positions: int = 262144):
        super().__init__()
        self.dims = dims
        self.attention_scaling = 1.0
        kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
        if kind == "yarn":
            inv_freq, self.attention_scaling = yarn_inv_freq(dims, base, scaling, max_positions)
        elif kind in ("default", None):
            inv_freq = default_inv_freq(dims, base)
        else:
            raise ValueError(f"unsupported rope_scaling type {kind!r} (supported: yarn)")
        # mx.fast.rope takes periods (1 / inverse frequency); keep them out of parameters
        self._freqs = 1.0 / inv_freq

    def __call__(self, x: mx.array, offset) -> mx.array:
        if self.attention_scaling != 1.0:
            # transformers scales cos and sin, i.e. only the rotated features
            rot = x[..., : self.dims] * self.attention_scaling
            x = mx.concatenate([rot, x[..., self.dims :]], axis=-1)
        return mx.fast.rope(
            x, self.dims, traditional=False, base=None, scale=1.0,
            offset=offset, freqs=self._freqs,
        )
