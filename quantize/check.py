"""`convert --check`: how far the converted model's next-token distributions are
from the source's on a few prompts (KL divergence and top-1 agreement).

The two models are loaded one after the other, never together: the source's
log-probabilities are kept (a few prompts' worth), its weights dropped, then the
converted model runs on the same token ids.
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


def _default_loader(path):
    from mlx_qwen3next import load_model

    return load_model(path, mtp=False)


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
    or a few default prompts). `loader(path) -> model` defaults to
    mlx_qwen3next.load_model. Returns {kl, kl_max, top1, positions}."""
    loader = loader or _default_loader
    if token_ids is None:
        token_ids = tokenize(source, prompts or DEFAULT_PROMPTS)
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
