"""Speculative decoding with the model's own multi-token-prediction (MTP) head.

Each round drafts k tokens with the MTP head, verifies them with one forward of
k + 1 tokens through the main model, keeps the longest accepted prefix plus one
token from the main model, and rewinds the hybrid cache to it. Greedy decoding
accepts exact matches, so its output equals plain greedy decoding; sampling uses
standard speculative rejection sampling, so tokens follow the main model's
distribution. Rewinding uses the per-token DeltaNet states kept during
verification (see `HybridCache.keep_steps`), which costs k + 1 small recurrence
steps instead of a second forward over the accepted tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import mlx.core as mx

from ..cache import HybridCache
from . import acceptance
from .prefill import prefill
from .sampling import SamplingConfig

GREEDY = SamplingConfig(temperature=0.0)


@dataclass
class MTPStats:
    drafted: int = 0
    accepted: int = 0
    forwards: int = 0  # main-model forwards, the prefill counted once
    tokens: int = 0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_forward(self) -> float:
        return self.tokens / self.forwards if self.forwards else 0.0


class _Round:
    """Bookkeeping of the rewind a verification round still owes the cache."""

    def __init__(self):
        self.fed = 0  # tokens fed to the main model this round (k + 1)
        self.yielded = 0

    def settle(self, cache: HybridCache):
        # the cache keeps the tokens before the last yielded one
        if self.fed:
            cache.rewind(self.fed - max(self.yielded, 1))
            self.fed = 0


def speculative_stream(
    model,
    prompt: Sequence[int],
    cache: HybridCache,
    *,
    draft_tokens: int = 1,
    sampling: SamplingConfig = GREEDY,
    logits_processors: Optional[list[Callable]] = None,
    max_tokens: int = 256,
    prefill_step: int = 2048,
    mtp_cache: Optional[HybridCache] = None,
    stats: Optional[MTPStats] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    on_chunk: Optional[Callable] = None,
    cuts=(),
) -> Iterator[tuple[int, mx.array, bool]]:
    """Yield (token, logprobs, accepted from a draft) like plain decoding, drafting with MTP.

    When the consumer stops early, the cache holds the prompt and every yielded
    token except the last, exactly as after plain decoding. The MTP head's own
    KV cache lives on `cache` (as `cache.mtp_cache`) so later turns of a
    conversation draft with the earlier context; it is trimmed back whenever
    the main cache was rewound behind it.
    """
    if not model.has_mtp:
        raise ValueError("this checkpoint has no MTP head (mtp.* weights); use plain decoding")
    if not 1 <= draft_tokens <= 4:
        raise ValueError(f"draft_tokens must be between 1 and 4, got {draft_tokens}")
    processors = logits_processors or []
    stats = stats if stats is not None else MTPStats()
    mtp_cache = _mtp_cache_for(model, cache, mtp_cache)
    history = list(prompt)

    hidden = _prefill(model, history, cache, mtp_cache, prefill_step, progress, on_chunk, cuts)
    stats.forwards += 1
    token, logprobs = acceptance.sample(sampling, _process(processors, history,
                                                          model.logits(hidden)))
    history.append(token)
    yield token, logprobs, False
    stats.tokens += 1
    pairs = (hidden, mx.array([[token]]))  # true hidden states whose next token is known
    produced, rnd = 1, _Round()
    try:
        while produced < max_tokens:
            drafts, draft_qs = _draft(model, pairs, mtp_cache, draft_tokens, sampling)
            fed = [token] + drafts
            cache.keep_steps(True)
            verify_hidden = model.hidden(mx.array([fed]), cache)
            cache.keep_steps(False)
            rnd.fed, rnd.yielded = len(fed), 0
            stats.forwards += 1
            stats.drafted += len(drafts)
            out, all_lps = _accept(model, verify_hidden, drafts, draft_qs, history,
                                   processors, sampling)
            stats.accepted += len(out) - 1
            for i, (tok, lp) in enumerate(zip(out, all_lps)):
                history.append(tok)
                rnd.yielded += 1
                produced += 1
                stats.tokens += 1
                yield tok, lp, i < len(out) - 1
                if produced >= max_tokens:
                    break
            mtp_cache.trim_kv(len(drafts) - 1)  # the chained draft steps were guesses
            n = rnd.yielded
            pairs = (verify_hidden[:, :n], mx.array([out[:n]]))
            token = out[n - 1]
            rnd.settle(cache)
    finally:
        rnd.settle(cache)


def _mtp_cache_for(model, cache, given):
    if given is None:
        given = getattr(cache, "mtp_cache", None) or model.mtp.make_cache()
    if given.offset > cache.offset:  # the main cache went back (undo, retry)
        given.trim_kv(given.offset - cache.offset)
    cache.mtp_cache = given
    return given


def _prefill(model, prompt, cache, mtp_cache, step, progress=None, on_chunk=None, cuts=()):
    """Main-model prefill; the MTP head sees each (hidden, next token) pair."""
    pending = None

    def feed_mtp(chunk, hidden):
        nonlocal pending
        if pending is not None:
            model.mtp_forward(mx.concatenate([pending, hidden[:, :-1]], axis=1), chunk, mtp_cache,
                              logits=False)
        elif chunk.shape[1] > 1:
            model.mtp_forward(hidden[:, :-1], chunk[:, 1:], mtp_cache, logits=False)
        pending = hidden[:, -1:]
        extra = on_chunk(chunk, hidden) if on_chunk is not None else None
        return mtp_cache.arrays() + list(extra or [])

    return prefill(model, cache, prompt, step, feed_mtp, progress, cuts=cuts)


def _draft(model, pairs, mtp_cache, k, sampling):
    """k draft tokens and the distributions they were drawn from."""
    hidden, next_ids = pairs
    drafts, lps = [], []
    for _ in range(k):
        logits, out = model.mtp_forward(hidden, next_ids, mtp_cache, last_only=True)
        token, lp = acceptance.draft(sampling, logits[:, -1, :])
        drafts.append(token)
        lps.append(lp)
        hidden, next_ids = out[:, -1:], mx.array([[token]])
    return drafts, lps


def _accept(model, verify_hidden, drafts, draft_qs, history, processors, sampling):
    """The accepted drafts and one more token from the main model, with their logprobs."""
    logits = model.logits(verify_hidden)
    out, lps = [], []
    seen = list(history)
    for i, draft in enumerate(drafts):
        target = _process(processors, seen, logits[:, i : i + 1])
        ok, replacement, lp = acceptance.accept(sampling, target, draft, draft_qs[i])
        if not ok:
            return out + [replacement], lps + [lp]
        out.append(draft)
        lps.append(lp)
        seen.append(draft)
    token, lp = acceptance.sample(sampling, _process(processors, seen, logits[:, -1:]))
    return out + [token], lps + [lp]


def _process(processors, history, logits):
    logits = logits[:, -1, :]
    if processors:
        tokens = mx.array(history)
        for p in processors:
            logits = p(tokens, logits)
    return logits
