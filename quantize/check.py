"""`convert --check`: how far the converted model's next-token distributions are
from the source's on a few prompts (KL divergence and top-1 agreement).

The two models run one after the other, never together, and each one layer at a
time (mlx_qwen3next.checkpoints.layerwise), so checking the 151 GB source needs about one
layer's memory: the source's log-probabilities are kept (a few prompts' worth),
then the converted model runs on the same token ids.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Callable, Optional, Sequence

DEFAULT_PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Explain why the sky is blue in one sentence.",
    "1, 1, 2, 3, 5, 8, 13,",
)


def _layerwise_log_probs(path, token_ids):
    import mlx.core as mx

    from mlx_qwen3next.checkpoints.layerwise import layerwise_logits

    out = []
    for logits in layerwise_logits(path, token_ids):
        logits = logits.astype(mx.float32)
        out.append(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    mx.eval(out)
    return out


def tokenize(path, prompts: Sequence[str]) -> list[list[int]]:
    from mlx_lm.utils import load_tokenizer

    tok = load_tokenizer(Path(path))
    return [tok.encode(p) for p in prompts]


def _log_probs(model, token_ids: list[list[int]]):
    import mlx.core as mx

    out = []
    for ids in token_ids:
        logits = model(mx.array([ids]))[0].astype(mx.float32)
        lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        mx.eval(lp)
        out.append(lp)
    return out


def compare(reference, test) -> dict:
    """KL(reference || test) per position (mean and max, nats) and top-1 agreement."""
    import mlx.core as mx

    ref = mx.concatenate(reference, axis=0)
    new = mx.concatenate(test, axis=0)
    kl = (mx.exp(ref) * (ref - new)).sum(axis=-1)
    top1 = (ref.argmax(axis=-1) == new.argmax(axis=-1)).astype(mx.float32)
    return {
        "kl": kl.mean().item(),
        "kl_max": kl.max().item(),
        "top1": top1.mean().item(),
        "positions": int(ref.shape[0]),
    }


def check(
    source,
    converted,
    prompts: Optional[Sequence[str]] = None,
    token_ids: Optional[list[list[int]]] = None,
    loader: Optional[Callable] = None,
) -> dict:
    """Compare `converted` with `source` on `token_ids` (or the tokenized `prompts`,
    or a few default prompts). `loader(path) -> model` (for example mlx-lm's) runs
    whole models; by default each runs layer by layer. Returns {kl, kl_max, top1,
    positions}."""
    if token_ids is None:
        token_ids = tokenize(source, prompts or DEFAULT_PROMPTS)
    if loader is None:
        reference = _layerwise_log_probs(source, token_ids)
        return compare(reference, _layerwise_log_probs(converted, token_ids))
    model = loader(source)
    reference = _log_probs(model, token_ids)
    del model
    gc.collect()
    model = loader(converted)
    result = compare(reference, _log_probs(model, token_ids))
    del model
    gc.collect()
    return result


def format_check(result: dict) -> str:
    return (
        f"KL(source || converted) {result['kl']:.4f} nats per token "
        f"(max {result['kl_max']:.4f}), top-1 agreement {100 * result['top1']:.1f}% "
        f"over {result['positions']} positions"
    )
