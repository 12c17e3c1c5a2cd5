"""One model serving many clients: a bounded queue of jobs, run by `work()` (MLX
evaluates on one device), each streaming its tokens back to the request's event loop.
A job runs alone until another waits; then they decode as one batch
(generation/batch.py), and later jobs join it between steps, up to `max_batch`.
`work()` runs in the thread that loaded the model, since MLX streams belong to the
thread that made them; the HTTP server runs in another. A full queue refuses at
once (429); a cancelled job stops at its next token. Requests share one PromptCache,
so a resent conversation prefills only its new tokens."""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import mlx.core as mx

from ..checkpoints.memory import wired_limit
from ..generation.batch import Batch, Row
from ..generation.prompt_cache import PromptCache
from ..generation.stream import prepare
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
    request: object = None  # prepared while it waited to join a batch
    answered: bool = False  # its final event (None, or an APIError) is sent

    def put(self, item):
        """Send an event to the request's handler; nothing after the final one."""
        if self.answered:
            return
        self.answered = item is None or isinstance(item, Exception)
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
    from_draft: bool = False  # accepted from an MTP draft


class Engine:
    POLL = 0.25  # seconds between checks for a stop while no job waits
    MAX_BATCH = 8  # requests decoded together at most

    def __init__(self, model, tokenizer, name: str, max_queue: int = 16,
                 prompt_cache: Optional[PromptCache] = None, max_context: Optional[int] = None,
                 max_batch: int = MAX_BATCH):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.max_context, self.max_batch = max_context, max_batch
        self.prompt_cache = prompt_cache if prompt_cache is not None else PromptCache()
        self.jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self.waiting: deque[Job] = deque()  # taken from the queue while a batch runs
        self.running: list[Job] = []
        self.peak_batch = 0  # the most requests decoded together so far
        self.stopping = threading.Event()

    def submit(self, job: Job):
        job.loop = asyncio.get_running_loop()
        try:
            if self.queued >= self.jobs.maxsize:  # one may wait outside the queue, prepared
                raise queue.Full
            self.jobs.put_nowait(job)
        except queue.Full:
            raise APIError(429, "the server is busy: too many requests queued; retry shortly",
                           kind="rate_limit_error", headers={"Retry-After": "1"}) from None

    @property
    def queued(self) -> int:
        return self.jobs.qsize() + len(self.waiting)

    def stop(self):
        """Cancel what runs; `work()` then refuses what waits (503) and returns. Only
        sets flags: it runs in a signal handler, which may interrupt `work()` while that
        holds the queue's lock."""
        self.stopping.set()
        for job in list(self.running):
            job.cancelled.set()

    def _refuse_waiting(self):
        while self.waiting:
            _refuse(self.waiting.popleft())
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
            self.running = [job]
            try:
                with wired_limit(self.model):
                    row = self._run(job)
                    if row is not None:
                        self._batch(row)
            except Exception as e:  # noqa: BLE001  (answered below)
                print(f"serving failed: {type(e).__name__}: {e}", file=sys.stderr)
            finally:
                self._fail_unanswered(RuntimeError("no final event"))
                self.running = []
                mx.clear_cache()

    def _next_job(self) -> Optional[Job]:
        """The next job, or None once stopping. The wait wakes every POLL seconds: a
        signal delivered to another thread (the kernel picks one) runs its Python handler
        only when this thread next runs Python code."""
        while not self.stopping.is_set():
            if self.waiting:
                return self.waiting.popleft()
            try:
                job = self.jobs.get(timeout=self.POLL)
            except queue.Empty:
                continue
            if not self.stopping.is_set():
                return job
            _refuse(job)
        self._refuse_waiting()
        return None

    def stopped(self, job: Job) -> bool:
        """Asked after each token: whether the job ends there."""
        return job.cancelled.is_set()

    # -- one request ----------------------------------------------------------------
    def _prepare(self, job: Job):
        if job.request is None:
            job.request = prepare(self.model, self.tokenizer, job.prompt, tools=job.tools,
                                  prompt_cache=self.prompt_cache,
                                  max_context=self.max_context, **job.args)
        return job.request

    def _run(self, job: Job) -> Optional[Row]:
        """Run `job` alone (see `_alone`)."""
        try:
            request = self._prepare(job)
            if request.cfg.seed is not None:
                mx.random.seed(request.cfg.seed)
            return self._alone(job, request, request.reply(), request.tokens())
        except Exception as e:  # noqa: BLE001
            self._fail(job, e)
            return None

    def _alone(self, job: Job, request, reply, gen) -> Optional[Row]:
        """Send the tokens of `gen` (job's token loop) until the reply ends; or, once
        another request waits to join it, stop after a token and return it as a batch
        row."""
        row = None
        try:
            for token, logprobs, *rest in gen:
                r = reply.feed(token, logprobs, bool(rest[0]) if rest else False)
                if self.stopped(job):
                    break
                self._emit(job, r)
                if r.finish_reason:
                    break
                if self._batchable(job) and self._joinable():
                    row = Row.resume(job, request, reply)
                    break
        finally:
            gen.close()  # the cache holds the prompt and all but the last token
            if row is None:
                request.done(reply.generated)
        if row is None:
            job.put(None)
        return row

    def _alone_again(self, batch: Batch) -> Optional[Row]:
        """The last row of `batch`, run alone again (with MTP, if its request has it)
        while nobody waits; returned as a row if somebody then does. Not for rows with
        logits processors: a resumed loop would not see the reply so far."""
        row = batch.rows[0]
        request, reply = row.request, row.reply
        try:
            batch.remove(row)
            left = request.budget - len(reply.generated)
            return self._alone(row.job, request, reply,
                               request.tokens(max_tokens=left, resume=row.last))
        except Exception as e:  # noqa: BLE001
            self._fail(row.job, e)
            return None

    def _emit(self, job: Job, r):
        job.produced += 1
        job.put(Token(r.text, r.token, r.finish_reason, r.prompt_tokens, r.generation_tokens,
                      r.cached_tokens, self._logprob(r, job.top_logprobs), r.from_draft))

    def _fail_unanswered(self, e: Exception):
        """Answer `e` to every running job still without its final event."""
        for job in self.running:
            if not job.answered:
                self._fail(job, e)

    def _fail(self, job: Job, e: Exception):
        if isinstance(e, APIError):
            job.put(e)
        elif isinstance(e, ValueError):  # our one-line argument errors
            status = 422 if "fit in the context" in str(e) else 400
            job.put(APIError(status, str(e)))
        else:  # reported without a traceback
            print(f"generation failed: {type(e).__name__}: {e}", file=sys.stderr)
            job.put(APIError(500, "generation failed (see the server's log)",
                             kind="server_error"))

    # -- requests decoded together ------------------------------------------------
    def _batchable(self, job: Job) -> bool:
        """Whether `job` may share its decode steps: not when it asks for MTP (which
        drafts for one row) or a seed (one random stream per process)."""
        return (self.max_batch > 1 and job.args.get("mtp") is not True
                and job.args.get("seed") is None)

    def _joinable(self) -> bool:
        """Whether the next waiting job can join a batch now. A waiting job that was
        cancelled, or that its arguments refuse, is answered here, and the next one looks."""
        while not self.stopping.is_set():
            if not self.waiting:
                try:
                    self.waiting.append(self.jobs.get_nowait())
                except queue.Empty:
                    return False
            job = self.waiting[0]
            if not self._batchable(job):
                return False
            try:
                if not job.cancelled.is_set():
                    self._prepare(job)
                    return True
                job.put(None)
            except Exception as e:  # noqa: BLE001
                self._fail(job, e)
            self.waiting.popleft()
        return False

    def _batch(self, first: Row):
        """Decode `first` with the jobs that join it, until none is left."""
        batch = Batch(self.model)
        batch.add(first)
        try:
            while len(batch):
                while len(batch) < self.max_batch and self._joinable():
                    self._join(batch, self.waiting.popleft())
                for row in [r for r in batch.rows if self.stopped(r.job)]:
                    self._leave(batch, row)
                if not len(batch):
                    return
                if len(batch) == 1 and not batch.rows[0].processors and not self._joinable():
                    row = self._alone_again(batch)
                    if row is None:
                        return
                    batch.add(row)
                    continue
                self.peak_batch = max(self.peak_batch, len(batch))
                for row, r in batch.step():
                    self._emit(row.job, r)
                    if r.finish_reason:
                        self._leave(batch, row)
        except Exception as e:  # noqa: BLE001
            self._fail_unanswered(e)

    def _join(self, batch: Batch, job: Job):
        """Prefill `job` alone, send its first token, and add it to `batch` unless that
        token ended it."""
        if self.stopping.is_set():
            _refuse(job)
            return
        if job.cancelled.is_set():
            job.put(None)
            return
        self.running.append(job)
        try:
            request = self._prepare(job)
            reply = request.reply()
            gen = request.tokens(plain=True, max_tokens=1)
            try:
                token, logprobs = next(gen)[:2]
            finally:
                gen.close()
            r = reply.feed(token, logprobs)
            self._emit(job, r)
            row = Row.resume(job, request, reply)
            if r.finish_reason:
                self._finish(row)
            else:
                batch.add(row)
        except Exception as e:  # noqa: BLE001
            if job in self.running:
                self.running.remove(job)
                self._fail(job, e)

    def _leave(self, batch: Batch, row: Row):
        batch.remove(row)
        self._finish(row)

    def _finish(self, row: Row):
        """Keep the row's cache in the prompt cache and end its stream (a cache that
        cannot be kept is logged: the reply itself is whole)."""
        self.running.remove(row.job)
        try:
            row.request.done(row.reply.generated)
        except Exception as e:  # noqa: BLE001
            print(f"prompt cache: a reply's cache was not kept: {type(e).__name__}: {e}",
                  file=sys.stderr)
        row.job.put(None)

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
