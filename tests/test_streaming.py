"""Layer-at-a-time forward (for models bigger than memory) equals the plain forward."""

import numpy as np

import mlx.core as mx
from mlx_qwen3next import load_model
from mlx_qwen3next.checkpoints.layerwise import layerwise_logits


def test_layerwise_logits_equal_the_model(tiny_checkpoint):
    prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7]]
    got = layerwise_logits(tiny_checkpoint, prompts)
    model = load_model(tiny_checkpoint)
    for ids, logits in zip(prompts, got):
        ref = model(mx.array([ids]))[0]
        assert np.allclose(np.array(logits), np.array(ref), rtol=1e-5, atol=1e-5)


def test_layerwise_memory_stays_at_one_layer(tiny_checkpoint):
    """Peak memory is about one layer plus embeddings and lm_head, not the whole model
    (4 layers + MTP here: the whole model measured about 4x the streamed peak)."""
    model = load_model(tiny_checkpoint, lazy=True)
    mx.clear_cache()  # what earlier tests left in MLX's buffer cache is not this one's
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    layerwise_logits(tiny_checkpoint, [[1, 2, 3]])
    streamed_peak = mx.get_peak_memory() - base
    mx.clear_cache()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    mx.eval(model.parameters())
    full = mx.get_peak_memory() - base
    assert streamed_peak < 0.5 * full, (streamed_peak, full)
