"""Training: gradients of a loss through the whole model, MTP head included.

A few Adam steps on the tiny model lower the loss, and the analytic gradients
match central finite differences on single parameters (router, DeltaNet gate,
attention, MTP head), over both the few-token and the chunked delta-rule paths.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten

from mlx_qwen3next import load_model
from mlx_qwen3next.kernels import dispatch

LENGTHS = (5, 24)  # <= MAX_T: decode.py; > MAX_T: chunked.py
CANDIDATES = 12


@pytest.fixture
def model(make_checkpoint):
    m = load_model(make_checkpoint(), specialise=False)
    m.train()
    return m


def batch(T: int, B: int = 2, seed: int = 0) -> mx.array:
    return mx.array(np.random.default_rng(seed).integers(0, 500, size=(B, T)), dtype=mx.int32)


def loss_fn(model, ids: mx.array) -> mx.array:
    """Next-token cross-entropy plus the MTP head's token-after-next cross-entropy."""
    h = model.hidden(ids)
    main = nn.losses.cross_entropy(model.logits(h[:, :-1]), ids[:, 1:], reduction="mean")
    draft, _ = model.mtp_forward(h[:, :-1], ids[:, 1:])
    mtp = nn.losses.cross_entropy(draft[:, :-1], ids[:, 2:], reduction="mean")
    return (main + mtp).astype(mx.float32)


def attention_layer(model) -> int:
    return next(i for i, layer in enumerate(model.layers) if not layer.is_linear)


def checked_names(model) -> list[str]:
    a = attention_layer(model)
    return [
        "model.layers.0.linear_attn.A_log",
        "model.layers.0.linear_attn.dt_bias",
        "model.layers.0.linear_attn.conv1d.weight",
        "model.layers.1.mlp.gate.weight",
        f"model.layers.{a}.self_attn.q_proj.weight",
        f"model.layers.{a}.mlp.gate.weight",
        "mtp.fc.weight",
        "mtp.layers.0.mlp.gate.weight",
        "mtp.layers.0.self_attn.q_proj.weight",
    ]


def check_grads(model, grads):
    flat = dict(tree_flatten(grads))
    assert set(flat) == {k for k, _ in tree_flatten(model.trainable_parameters())}
    for name, g in flat.items():
        assert bool(mx.all(mx.isfinite(g))), name
    for name in checked_names(model):
        assert float(mx.abs(flat[name]).max()) > 0, f"zero gradient for {name}"


@pytest.mark.parametrize("T", LENGTHS)
def test_adam_steps_lower_the_loss(model, T):
    ids = batch(T)
    opt = optim.Adam(learning_rate=1e-2)
    step = nn.value_and_grad(model, loss_fn)
    losses = []
    with dispatch.using(dispatch.PLAIN):
        for _ in range(8):
            loss, grads = step(model, ids)
            check_grads(model, grads)
            opt.update(model, grads)
            mx.eval(model.parameters(), opt.state, loss)
            losses.append(loss.item())
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < 0.5 * losses[0], losses


def set_entry(model, name: str, index: tuple, value: float):
    w = np.array(dict(tree_flatten(model.parameters()))[name])
    w[index] = value
    model.update(tree_unflatten([(name, mx.array(w))]))


def central(model, ids, name: str, index: tuple, eps: float) -> float:
    w0 = float(np.array(dict(tree_flatten(model.parameters()))[name])[index])
    f = []
    for x in (w0 + eps, w0 - eps):
        set_entry(model, name, index, x)
        f.append(loss_fn(model, ids).item())
    set_entry(model, name, index, w0)
    return (f[0] - f[1]) / (2 * eps)


def smooth_derivative(model, ids, name: str, index: tuple, eps: float = 1e-3):
    """The central difference, or None where the loss jumps within the step: top-k
    routing is a choice, and crossing a boundary makes the two step sizes disagree."""
    wide, narrow = (central(model, ids, name, index, e) for e in (eps, eps / 2))
    return narrow if abs(wide - narrow) <= 1e-2 * abs(narrow) + 1e-2 else None


@pytest.mark.parametrize("T", LENGTHS)
def test_gradients_match_finite_differences(model, T):
    """On the largest entries of each checked gradient, skipping those whose
    finite difference steps over a routing boundary (judged on the loss alone)."""
    ids = batch(T, seed=1)
    with dispatch.using(dispatch.PLAIN):
        _, grads = nn.value_and_grad(model, loss_fn)(model, ids)
        flat = {k: np.array(v) for k, v in tree_flatten(grads)}
        for name in checked_names(model):
            g = flat[name]
            for i in np.argsort(-np.abs(g), axis=None)[:CANDIDATES]:
                index = np.unravel_index(i, g.shape)
                numeric = smooth_derivative(model, ids, name, index)
                if numeric is not None:
                    break
            assert numeric is not None, f"{name}: every step crossed a routing boundary"
            analytic = float(g[index])
            assert abs(numeric - analytic) <= max(1e-2, 2e-2 * abs(analytic)), (
                name, index, analytic, numeric)
