"""One model serving many clients: a bounded queue of jobs, run one at a time by `work()`
(MLX evaluates on one device), each streaming its tokens back to the request's event
loop. `work()` runs in the thread that loaded the model, since MLX streams belong to
the thread that made them; the HTTP server runs in another. A full queue refuses at
once (429); a cancelled job stops at its next token. Requests share one PromptCache,
so a resent conversation prefills only its new tokens."""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
from dataclasses import dataclass, field
from typing import Optional

import mlx.core as mx

from ..generation import stream_generate
from ..generation.prompt_cache import PromptCache
from .protocol import APIError


@dataclass
class Job:
    prompt: object  # text, token ids or chat messages
    args: dict
    tools: Optional[list] = None
    top_logprobs: Optional[int] = None  # None: no logprobs; 0 or more: that many alternatives
    loop: Optional[asyncio.AbstractEventLoop] = None
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    produced: int = 0  # tokens generated, sent or not

    def put(self, item):
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


@dataclass
class Token:
    """One generated token as the handlers need it (no MLX arrays cross threads)."""

    text: str
    token: int
    finish_reason: Optional[str]
    prompt_tokens: int
    generation_tokens: int
    cached_tokens: int
    logprob: Optional[dict] = None


class Engine:
    POLL = 0.25  # seconds between checks for a stop while no job waits

    def __init__(self, model, tokenizer, name: str, max_queue: int = 16,
                 prompt_cache: Optional[PromptCache] = None, max_context: Optional[int] = None):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.max_context = max_context
        self.prompt_cache = prompt_cache if prompt_cache is not None else PromptCache()
        self.jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self.running: Optional[Job] = None
        self.stopping = threading.Event()

    def submit(self, job: Job):
        job.loop = asyncio.get_running_loop()
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise APIError(429, "the server is busy: too many requests queued; retry shortly",
                           kind="rate_limit_error", headers={"Retry-After": "1"}) from None

    def stop(self):
        """Cancel what runs; `work()` then refuses what waits (503) and returns. Only
        sets flags: it runs in a signal handler, which may interrupt `work()` while that
        holds the queue's lock."""
        self.stopping.set()
        running = self.running
        if running is not None:
            running.cancelled.set()

    def _refuse_waiting(self):
        while True:
            try:
                _refuse(self.jobs.get_nowait())
            except queue.Empty:
                return

    def work(self):
        """Run jobs until `stop()`; call it from the thread that loaded the model."""
        while True:
            job = self._next_job()
            if job is None:
                return
            if job.cancelled.is_set():
                job.put(None)
                continue
            self.running = job
            try:
                self._run(job)
            except APIError as e:
                job.put(e)
            except ValueError as e:  # our one-line argument errors
                status = 422 if "fit in the context" in str(e) else 400
                job.put(APIError(status, str(e)))
            except Exception as e:  # noqa: BLE001  (reported without a traceback)
                print(f"generation failed: {type(e).__name__}: {e}", file=sys.stderr)
                job.put(APIError(500, "generation failed (see the server's log)",
                                 kind="server_error"))
            finally:
                self.running = None
                mx.clear_cache()

    def _next_job(self) -> Optional[Job]:
        """The next job, or None once stopping. The wait wakes every POLL seconds: a
        signal delivered to another thread (the kernel picks one) runs its Python handler
        only when this thread next runs Python code."""
        while not self.stopping.is_set():
            try:
                job = self.jobs.get(timeout=self.POLL)
            except queue.Empty:
                continue
            if not self.stopping.is_set():
                return job
            _refuse(job)
        self._refuse_waiting()
        return None

    def _stream(self, job: Job):
        """The job's GenerationResponses, ending early once it is cancelled."""
        stream = stream_generate(self.model, self.tokenizer, job.prompt, tools=job.tools,
                                 prompt_cache=self.prompt_cache, max_context=self.max_context,
                                 **job.args)
        try:
            for r in stream:
                if self.stopped(job):
                    return
                yield r
        finally:
            stream.close()

    def stopped(self, job: Job) -> bool:
        """Asked after each token: whether the job ends there."""
        return job.cancelled.is_set()

    def _run(self, job: Job):
        stream = self._stream(job)
        try:
            for r in stream:
                job.produced += 1
                job.put(Token(r.text, r.token, r.finish_reason, r.prompt_tokens,
                              r.generation_tokens, r.cached_tokens,
                              self._logprob(r, job.top_logprobs)))
        finally:
            stream.close()
        job.put(None)

    def _logprob(self, r, top: Optional[int]) -> Optional[dict]:
        if top is None:
            return None
        lp = r.logprobs.astype(mx.float32)
        alternatives = []
        if top:
            best = mx.argpartition(-lp, kth=top - 1)[:top]
            alternatives = sorted(((int(i), float(lp[i].item())) for i in best.tolist()),
                                  key=lambda t: -t[1])
        return {**self._entry(r.token, float(lp[r.token].item())),
                "top_logprobs": [self._entry(i, v) for i, v in alternatives]}

    def _entry(self, token: int, logprob: float) -> dict:
        text = self.tokenizer.decode([token])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def _refuse(job: Job):
    """A job that will not run, because the server is stopping: 503."""
    job.cancelled.set()
    job.put(APIError(503, "the server is shutting down", kind="server_error"))
