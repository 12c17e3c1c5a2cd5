"""Serving a model split across ranks: the HTTP server and its queue live on rank 0.

Rank 0 passes each job (prompt, tools, generation keywords) to the other ranks as
JSON before running it; they run it too, on their own layers, and throw the text
away. After every token rank 0 says whether the job goes on (a client that went
away, a shutdown), so all stop at the same token. A job of None ends them.
Jobs run one at a time (no batches): the other ranks follow one job at a time.
The prompt cache is off: it evicts by bytes, which differ between ranks.
"""

from __future__ import annotations

import json

from ..generation import stream_generate
from ..generation.prompt_cache import PromptCache
from .engine import Engine, Job


def no_prompt_cache() -> PromptCache:
    return PromptCache(max_bytes=0)


class RankEngine(Engine):
    """Rank 0's Engine when the model is split: every job reaches every rank."""

    def __init__(self, link, model, tokenizer, name: str, **kw):
        super().__init__(model, tokenizer, name, prompt_cache=no_prompt_cache(), max_batch=1,
                         **kw)
        self.link = link

    def work(self):
        try:
            super().work()
        finally:
            self.link.text_from_rank0(None)

    def _run(self, job: Job):
        try:
            self.link.text_from_rank0(json.dumps(
                {"prompt": job.prompt, "tools": job.tools, "args": job.args}))
        except Exception as e:  # noqa: BLE001
            self._fail(job, e)
            return None
        return super()._run(job)

    def stopped(self, job: Job) -> bool:
        return bool(self.link.from_rank0([int(job.cancelled.is_set())], 1)[0])


def follow(link, model, tokenizer, max_context=None):
    """The other ranks: run rank 0's jobs until it says there are no more."""
    cache = no_prompt_cache()
    while True:
        text = link.text_from_rank0(None)
        if text is None:
            return
        job = json.loads(text)
        try:
            stream = stream_generate(model, tokenizer, job["prompt"], tools=job["tools"],
                                     prompt_cache=cache, max_context=max_context,
                                     **job["args"])
        except ValueError:  # rank 0 turned it down the same way
            continue
        try:
            for _ in stream:
                if link.from_rank0([0], 1)[0]:
                    break
        finally:
            stream.close()
