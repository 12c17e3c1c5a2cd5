"""The load-time step that fits a model to the device it runs on.

The model is written once for a GPU. On every device, the products that read one
input are joined (model/fused.py). On the CPU, cpu.specialise then swaps in the
CPU layouts; on a GPU, the delta rule's policy is set by timing MLX's own
kernel against our ops on this model's head shapes (kernels.dispatch.calibrate).
"""

from __future__ import annotations

import mlx.core as mx

from ..kernels import dispatch
from ..model.fused import fuse


def specialise(model, join: bool = True):
    """Fit `model` (in place) to the default device; returns it. `join`: fuse products
    (off for a model whose weights are swapped by checkpoint name, as layerwise.py does)."""
    if join:
        fuse(model)
    if mx.default_device() == mx.cpu:
        from ..cpu.specialise import specialise as cpu_specialise

        return cpu_specialise(model)
    cfg = model.config
    dtype = getattr(model, "act_dtype", None)  # a pipeline stage may hold no embedding
    if dtype is None:
        dtype = model.model.embed_tokens(mx.array([0])).dtype  # the activations' dtype
    dispatch.set_policy(dispatch.calibrate(cfg.linear_num_key_heads, cfg.linear_num_value_heads,
                                           cfg.linear_key_head_dim, cfg.linear_value_head_dim,
                                           dtype))
    return model
