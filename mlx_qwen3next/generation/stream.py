"""`stream_generate` / `generate`: a request checked, encoded and run through the token
loop, as streaming text with stop ids and strings, timings and the wired-memory limit."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import mlx.core as mx

from ..checkpoints.memory import wired_limit
from .context import context_limit
from .kv_quant import quantize_kv
from .loop import make_token_loop
from .prefill import PREFILL_STEP
from .prompt import check_max_tokens, check_stop, encode_prompt
from .prompt_cache import PromptCache, message_ends
from .sampling import SamplingConfig, default_sampling, make_processors, resolve_sampling


@dataclass
class GenerationResponse:
    """One generated token and the text it completes (mlx-lm's fields, plus prompt_time)."""

    text: str  # new text; may be "" (a multi-byte character not complete yet)
    token: int
    logprobs: mx.array  # [vocab] log-probabilities the token was drawn from (before sampling)
    from_draft: bool  # accepted from an MTP draft
    prompt_tokens: int
    prompt_tps: float
    generation_tokens: int
    generation_tps: float
    peak_memory: float  # GB
    finish_reason: Optional[str] = None  # "stop" (eos id or stop string), "length", or None
    prompt_time: float = 0.0  # seconds to the first token
    cached_tokens: int = 0  # prompt tokens that came from the prompt cache, not a prefill


def stream_generate(model, tokenizer, prompt, **kwargs) -> Iterator[GenerationResponse]:
    """Stream a reply: one GenerationResponse per generated token, the last with
    finish_reason set. Arguments are checked now (ValueError, one line), before
    any work.

    prompt: raw text, bytes (UTF-8), token ids, or chat messages
    ([{"role": ..., "content": ...}], rendered with the chat template and `tools`).
    Sampling defaults come from the model card and generation_config.json
    (`sampling`), each keyword overriding one field; temperature 0 is greedy.
    Stops at any eos id (not included in the text), any `stop` string (cut off),
    `max_tokens` (None: until the context is full). Pass `cache` to continue a
    conversation (see `token_stream` for what it holds afterwards), or a
    `prompt_cache` (prompt_cache.py) to start from the longest prefix it holds and keep
    this request's cache in it when the stream ends. The keywords are `prepare`'s:
    max_tokens (512), sampling, temperature, top_p, top_k, min_p, presence_penalty,
    repetition_penalty, seed, stop, cache, prefill_step_size, kv_bits, max_context,
    tools, progress, mtp, draft_tokens (1) and prompt_cache.
    """
    return _stream(model, prepare(model, tokenizer, prompt, **kwargs))


def prepare(model, tokenizer, prompt, *, max_tokens: Optional[int] = 512,
            sampling: Optional[SamplingConfig] = None, temperature: Optional[float] = None,
            top_p: Optional[float] = None, top_k: Optional[int] = None,
            min_p: Optional[float] = None, presence_penalty: Optional[float] = None,
            repetition_penalty: Optional[float] = None, seed: Optional[int] = None,
            stop: str | Sequence[str] | None = None, cache=None,
            prefill_step_size: int = PREFILL_STEP, kv_bits: Optional[int] = None,
            max_context: Optional[int] = None, tools: Optional[list] = None,
            progress: Optional[Callable[[int, int], None]] = None,
            mtp: Optional[bool] = None, draft_tokens: int = 1,
            prompt_cache: Optional[PromptCache] = None) -> "Request":
    """stream_generate's request, checked and encoded, its cache found, nothing run yet."""
    cfg = resolve_sampling(sampling or default_sampling(tokenizer, model),
                           temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                           presence_penalty=presence_penalty,
                           repetition_penalty=repetition_penalty, seed=seed)
    stops, max_tokens = check_stop(stop), check_max_tokens(max_tokens)
    if isinstance(prefill_step_size, bool) or not isinstance(prefill_step_size, int) \
            or prefill_step_size < 1:
        raise ValueError(f"prefill_step_size must be a positive integer, got {prefill_step_size!r}")
    ids = encode_prompt(tokenizer, prompt, model.config.vocab_size, tools)
    if prompt_cache is not None and cache is not None:
        raise ValueError("pass cache or prompt_cache, not both")
    cache = model.make_cache() if cache is None else cache
    limit = max_context or context_limit(model.config)
    room = limit - cache.offset - len(ids)
    if room < 0:
        raise ValueError(f"prompt is {len(ids)} tokens but only {max(limit - cache.offset, 0)} "
                         f"fit in the context ({limit} tokens)")
    budget = room + 1 if max_tokens is None else min(max_tokens, room + 1)
    loop = make_token_loop(model, cfg, mtp, draft_tokens)
    if kv_bits is not None:
        quantize_kv(cache, kv_bits)
    ends = message_ends(tokenizer, prompt, tools, ids) if is_chat(prompt) else []
    reuse = Reuse(prompt_cache, model, ids, kv_bits, ends) if prompt_cache else None
    detok = exact_detokenizer(tokenizer) if not is_chat(prompt) else tokenizer.detokenizer
    return Request(model, tokenizer, ids, cfg, stops, budget, loop, reuse.cache if reuse else cache,
                   reuse, detok, prefill_step_size, progress, kv_bits)


@dataclass
class Request:
    """One request ready to run: `tokens()` prefills and yields its tokens, `reply()`
    turns them into GenerationResponses, `done()` keeps its cache in the prompt cache."""

    model: object
    tokenizer: object
    ids: list
    cfg: SamplingConfig
    stops: list
    budget: int
    loop: Callable
    cache: object
    reuse: Optional["Reuse"]
    detok: object
    prefill_step_size: int
    progress: Optional[Callable]
    kv_bits: Optional[int]

    @property
    def start(self) -> int:
        """Prompt tokens taken from the prompt cache."""
        return self.reuse.start if self.reuse else 0

    def tokens(self, plain: bool = False, max_tokens: Optional[int] = None,
               resume: Optional[int] = None):
        """(token, logprobs, ...) from the token loop (`plain`: without MTP), at most
        `max_tokens` of the budget. `resume`: continue the reply from its last token
        instead (the cache holding everything before it; no logits processors)."""
        loop = make_token_loop(self.model, self.cfg, False) if plain else self.loop
        budget = self.budget if max_tokens is None else min(self.budget, max_tokens)
        if resume is not None:
            return loop([resume], self.cache, [], budget, self.prefill_step_size, None)
        reuse, n = self.reuse, len(self.ids) - self.start
        return loop(self.ids[self.start:], self.cache, make_processors(self.cfg, n), budget,
                    self.prefill_step_size, self.progress, reuse.recorder if reuse else None,
                    reuse.cuts if reuse else ())

    def reply(self) -> "Reply":
        return Reply(self.tokenizer, self.detok, len(self.ids), self.stops, self.budget,
                     self.start)

    def done(self, generated: list):
        """The request ended with `generated` tokens; its cache holds all but the last."""
        if self.reuse and generated:
            self.reuse.store(self.ids + generated[:-1], self.cache)


class Reuse:
    """One request's use of a prompt cache: the warm cache it starts from, where its
    prefill checkpoints, and its cache kept when it ends."""

    def __init__(self, prompt_cache: PromptCache, model, ids, kv_bits, boundaries):
        self.prompt_cache, self.kv_bits = prompt_cache, kv_bits
        self.cache, self.start = prompt_cache.fetch(model, ids, kv_bits)
        self.cuts = prompt_cache.cuts(self.start, len(ids) - 1, boundaries)
        self.recorder = prompt_cache.recorder(self.cache, [self.start + c for c in self.cuts])

    def store(self, tokens, cache):
        self.prompt_cache.store(tokens, cache, self.recorder.points, self.kv_bits)


def is_chat(prompt) -> bool:
    return isinstance(prompt, (list, tuple)) and bool(prompt) and isinstance(prompt[0], dict)


def exact_detokenizer(tokenizer):
    """A streaming detokenizer that keeps the text exactly: mlx-lm's BPE one drops the
    leading space of the first token, which a raw completion must keep."""
    detok = tokenizer.detokenizer
    if hasattr(detok, "_maybe_trim_space"):
        detok._maybe_trim_space = lambda text: text
    return detok


def _stream(model, request: Request):
    with wired_limit(model):
        if request.cfg.seed is not None:
            mx.random.seed(request.cfg.seed)
        reply = request.reply()
        gen = request.tokens()
        try:
            for token, logprobs, *rest in gen:
                r = reply.feed(token, logprobs, bool(rest[0]) if rest else False)
                yield r
                if r.finish_reason:
                    return
        finally:
            gen.close()  # the cache now holds the prompt and all but the last token
            request.done(reply.generated)


class Reply:
    """A request's tokens as streaming text: stop ids and strings, the budget, timings.
    `feed` each token as it comes; the response that ends the reply has finish_reason set."""

    def __init__(self, tokenizer, detok, n_prompt: int, stops, budget: int, cached: int = 0):
        self.eos = set(tokenizer.eos_token_ids)
        self.detok, self.stops, self.budget = detok, stops, budget
        self.n_prompt, self.cached = n_prompt, cached
        self.holdback = max((len(s) for s in stops), default=1) - 1
        self.unreleased = ""
        self.generated: list[int] = []
        self.tic = time.perf_counter()
        self.prompt_time = 0.0

    def feed(self, token: int, logprobs: mx.array, from_draft: bool = False
             ) -> GenerationResponse:
        n = len(self.generated)
        self.generated.append(token)
        if n == 0:
            self.prompt_time = time.perf_counter() - self.tic
            self.tic = time.perf_counter()
        finish = None
        if token in self.eos:
            finish = "stop"
        else:
            self.detok.add_token(token)
            if n + 1 == self.budget:
                finish = "length"
        if finish:
            self.detok.finalize()
        self.unreleased += self.detok.last_segment
        cut = min((i for i in (self.unreleased.find(s) for s in self.stops) if i >= 0),
                  default=-1)
        if cut >= 0:
            self.unreleased, finish = self.unreleased[:cut], "stop"
        split = len(self.unreleased) if finish else max(len(self.unreleased) - self.holdback, 0)
        text, self.unreleased = self.unreleased[:split], self.unreleased[split:]
        elapsed = max(time.perf_counter() - self.tic, 1e-9)
        return GenerationResponse(
            text=text, token=token, logprobs=logprobs, from_draft=from_draft,
            prompt_tokens=self.n_prompt, prompt_tps=self.n_prompt / max(self.prompt_time, 1e-9),
            generation_tokens=n + 1, generation_tps=(n + 1) / elapsed,
            peak_memory=mx.get_peak_memory() / 1e9, finish_reason=finish,
            prompt_time=self.prompt_time, cached_tokens=self.cached,
        )


def generate(model, tokenizer, prompt, **kwargs) -> str:
    """The whole reply as one string; takes stream_generate's keywords."""
    return "".join(r.text for r in stream_generate(model, tokenizer, prompt, **kwargs))
