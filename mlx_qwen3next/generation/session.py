"""ChatSession: a multi-turn chat that keeps the hybrid cache between turns.

The messages are the truth; the cache follows them. Each turn renders the whole
conversation with the chat template and feeds only the text past what the
cache already holds (the model's own reply tokens stay as generated). When the
history changed behind the cache (undo, retry, a new system prompt, a reply cut
by a stop string), the session goes back to the newest checkpoint whose text
is still a prefix, or starts over; DeltaNet state cannot be trimmed, so
checkpoints are how it goes back. A checkpoint costs the DeltaNet state (about
74 MB on the real model, nothing for the KV cache); at most `max_snapshots`
are kept (two per turn: before the user's tokens and before the reply).

Interrupting a reply (closing its iterator, `break`, Ctrl-C): if at least one
token came, the partial reply is KEPT as the assistant message (`retry()`
regenerates it, `undo()` drops the turn); if none came, the turn is dropped.
The session stays usable either way.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import asdict, dataclass, fields
from typing import Iterator, Optional

import mlx.core as mx

from ..cache import Mark, marks_nbytes
from ..checkpoints.memory import wired_limit
from .chat_file import read_chat, write_chat
from .context import context_limit
from .kv_quant import quantize_kv
from .prefill import PREFILL_STEP, prefill
from .prompt import (
    check_max_tokens, check_messages, check_stop, check_text, encode_text, render_chat,
)
from .prompt_cache import PromptCache, message_ends
from .sampling import SamplingConfig, default_sampling
from .stream import GenerationResponse, exact_detokenizer, stream_generate

_SAMPLING = {f.name for f in fields(SamplingConfig)}
_OTHER = ("max_tokens", "stop", "system")


@dataclass
class SessionStats:
    ttft: float = 0.0  # seconds from send() to the first reply token, last turn
    prompt_tokens: int = 0  # tokens prefilled for the last turn (only the new ones)
    prompt_tps: float = 0.0
    generation_tokens: int = 0
    generation_tps: float = 0.0
    context_used: int = 0  # tokens in the conversation the model has seen
    max_context: int = 0
    cache_bytes: int = 0
    snapshot_bytes: int = 0
    peak_memory: float = 0.0  # GB


@dataclass
class _Checkpoint:
    text: str  # the conversation text the cache + pending token stand for
    n_ids: int
    pending: Optional[int]  # yielded or last prompt token, not in the cache yet
    mark: Mark


class ChatSession:
    """`for chunk in session.send("Hi"): print(chunk.text, end="")`."""

    def __init__(self, model, tokenizer, system: Optional[str] = None, *,
                 tools: Optional[list] = None, max_tokens: Optional[int] = 1024,
                 stop=None, max_context: Optional[int] = None,
                 prefill_step_size: int = PREFILL_STEP, kv_bits: Optional[int] = None,
                 max_snapshots: int = 6, mtp: Optional[bool] = None, draft_tokens: int = 1,
                 progress=None, prompt_cache: Optional[PromptCache] = None, **sampling):
        self.model, self.tokenizer, self.tools = model, tokenizer, tools
        self.prompt_cache = prompt_cache  # where a conversation re-prefilled starts from
        self.sampling = default_sampling(tokenizer, model).update(**sampling)
        self.max_tokens, self.stop = check_max_tokens(max_tokens), check_stop(stop)
        self.max_context = max_context or context_limit(model.config)
        self.prefill_step_size, self.kv_bits = prefill_step_size, kv_bits
        self.max_snapshots, self.mtp, self.draft_tokens = max(1, max_snapshots), mtp, draft_tokens
        self.progress = progress  # progress(done, total) during a turn's prefill
        self._messages: list[dict] = []
        self._active = None
        self._last = SessionStats()
        if system is not None:
            self.set("system", system)
        if self.sampling.seed is not None:
            self.set("seed", self.sampling.seed)
        self._reset_cache()

    # -- settings -----------------------------------------------------------
    def set(self, key: str, value) -> None:
        """Change a setting (a sampling field, max_tokens, stop, system); ValueError if bad."""
        if key in _SAMPLING:
            self.sampling = self.sampling.update(**{key: value})
            if key == "seed" and value is not None:
                mx.random.seed(value)
        elif key == "max_tokens":
            self.max_tokens = check_max_tokens(value)
        elif key == "stop":
            self.stop = check_stop(value)
        elif key == "system":
            if value is not None and not isinstance(value, str):
                raise ValueError("system must be text")
            self._close_active()
            has = self.system is not None
            self._messages[:has] = [{"role": "system", "content": check_text(
                value, "system prompt")}] if value else []
        else:
            known = ", ".join(sorted(_SAMPLING | set(_OTHER)))
            raise ValueError(f"unknown setting {key!r} (known: {known})")

    @property
    def settings(self) -> dict:
        return {**self.sampling.to_dict(), "max_tokens": self.max_tokens, "stop": self.stop,
                "system": self.system}

    @property
    def system(self) -> Optional[str]:
        first = self._messages[0] if self._messages else {}
        return first.get("content") if first.get("role") == "system" else None

    # -- conversation ---------------------------------------------------------
    @property
    def messages(self) -> list[dict]:
        return [dict(m) for m in self._messages]

    @property
    def tokens(self) -> list[int]:
        """The token ids of the conversation as the model sees it (cache + pending)."""
        return self._ids + ([self._pending] if self._pending is not None else [])

    def send(self, text: str) -> Iterator[GenerationResponse]:
        """Add a user message and stream the reply (bad input raises ValueError now).

        Nothing changes until the iterator is started."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("message is empty")
        self._close_active()
        messages = self._messages + [{"role": "user", "content": check_text(text, "message")}]
        return self._start(messages)

    def tool_result(self, content: str) -> Iterator[GenerationResponse]:
        """Add the result of the tool the last reply called and stream the answer to it."""
        if not isinstance(content, str) or not content.strip():
            raise ValueError("tool result is empty")
        self._close_active()
        if not self._messages or self._messages[-1]["role"] != "assistant":
            raise ValueError("no reply to answer with a tool result: send a message first")
        messages = self._messages + [{"role": "tool",
                                      "content": check_text(content, "tool result")}]
        return self._start(messages)

    def retry(self) -> Iterator[GenerationResponse]:
        """Regenerate the last reply from the checkpoint before it."""
        self._close_active()
        if not self._messages or self._messages[-1]["role"] != "assistant":
            raise ValueError("nothing to retry: the last message is not a reply")
        return self._start(self._messages[:-1])

    def undo(self) -> str:
        """Drop the last turn (user message and its reply); returns the user's text."""
        self._close_active()
        users = [i for i, m in enumerate(self._messages) if m["role"] == "user"]
        if not users:
            raise ValueError("nothing to undo")
        text = self._messages[users[-1]]["content"]
        del self._messages[users[-1]:]
        self._last = SessionStats()  # the figures of a turn that is gone
        return text

    def clear(self) -> None:
        """Forget the conversation (the system prompt stays) and free the cache."""
        self._close_active()
        self._messages = [m for m in self._messages[:1] if m["role"] == "system"]
        self._last = SessionStats()
        self._reset_cache()

    # -- persistence ------------------------------------------------------------
    def save(self, path) -> None:
        """Write the conversation as JSON (chat_file.py: a failed write leaves a previous
        save whole)."""
        write_chat(path, self._messages, self.tools,
                   {k: v for k, v in self.settings.items() if k != "system"})

    def load(self, path) -> None:
        """Replace the conversation and settings with a saved one (the next turn prefills
        it). The whole file is checked first: a bad one changes nothing."""
        messages, tools, changes = read_chat(path, _SAMPLING | set(_OTHER))
        try:
            sampling = self.sampling.update(**{k: v for k, v in changes.items()
                                               if k in _SAMPLING})
            max_tokens = check_max_tokens(changes.get("max_tokens", self.max_tokens))
            stop = check_stop(changes.get("stop", self.stop))
        except ValueError as e:
            raise ValueError(f"{path}: not a saved chat ({e})") from None
        self.clear()
        self.sampling, self.max_tokens, self.stop = sampling, max_tokens, stop
        if sampling.seed is not None:
            mx.random.seed(sampling.seed)
        self._messages = [dict(m) for m in messages]
        self.tools = tools

    def save_cache(self, path) -> None:
        """Write the conversation's cache (and the messages) to a prompt-cache file, so
        that `load_cache` resumes it without a prefill."""
        from .cache_file import save_prompt_cache

        self._close_active()
        save_prompt_cache(path, self.cache, self._ids, self.model, messages=self._messages,
                          text=self._text, pending=self._pending, tools=self.tools)

    def load_cache(self, path) -> None:
        """Resume a conversation saved with `save_cache`: its messages and its cache."""
        from .cache_file import load_prompt_cache

        cache, tokens, extra = load_prompt_cache(path, self.model, self.kv_bits)
        if not isinstance(extra.get("text"), str):
            raise ValueError(f"{path}: not a chat's cache (saved by cache-prompt or the API?)")
        messages = check_messages(extra["messages"]) if extra.get("messages") else []
        self.clear()
        self._messages, self.tools = [dict(m) for m in messages], extra.get("tools")
        self.cache, self._ids, self._text = cache, tokens, extra["text"]
        self._pending = extra.get("pending")

    # -- stats ------------------------------------------------------------------
    @property
    def stats(self) -> SessionStats:
        return SessionStats(**{**asdict(self._last), "context_used": self.context_used,
                               "max_context": self.max_context,
                               "cache_bytes": self.cache.nbytes,
                               "snapshot_bytes": marks_nbytes(c.mark for c in self._checkpoints)})

    @property
    def context_used(self) -> int:
        """Tokens the conversation takes in the context: what the cache holds while it
        follows the messages; after an undo or a load, what the next turn will hold."""
        text = render_chat(self.tokenizer, self._messages, self.tools,
                           add_generation_prompt=False) if self._messages else ""
        if self._text and text.startswith(self._text):
            return len(self.tokens)
        return len(encode_text(self.tokenizer, text))

    # -- internals --------------------------------------------------------------
    def _reset_cache(self):
        self.cache = self.model.make_cache()
        if self.kv_bits is not None:
            quantize_kv(self.cache, self.kv_bits)
        self._ids, self._pending, self._text = [], None, ""
        self._checkpoints: list[_Checkpoint] = []

    def _close_active(self):
        gen = self._active() if self._active is not None else None
        self._active = None
        if gen is not None:
            gen.close()

    def _checkpoint(self):
        top = self._checkpoints[-1] if self._checkpoints else None
        if top is None or (top.n_ids, top.pending) != (len(self._ids), self._pending):
            self._checkpoints.append(
                _Checkpoint(self._text, len(self._ids), self._pending, self.cache.mark()))
            del self._checkpoints[: -self.max_snapshots]

    def _start(self, messages):
        feed, target = self._plan(messages)
        gen = self._run(feed, target, messages)
        self._active = weakref.ref(gen)
        return gen

    def _plan(self, messages):
        """Render `messages`, go back as far as needed, return (tokens to feed, text)."""
        target = render_chat(self.tokenizer, messages, self.tools)
        if not target.startswith(self._text):
            while self._checkpoints and not target.startswith(self._checkpoints[-1].text):
                self._checkpoints.pop()
            if self._checkpoints:
                cp = self._checkpoints[-1]
                self.cache.restore(cp.mark)
                self._ids, self._pending, self._text = self._ids[: cp.n_ids], cp.pending, cp.text
            else:
                self._reset_cache()
        if not self._ids and self._pending is None:  # nothing here: maybe in the prompt cache
            warm = self._from_prompt_cache(target)
            if warm is not None:
                return warm, target
        feed = ([self._pending] if self._pending is not None else [])
        feed += encode_text(self.tokenizer, target[len(self._text):])
        return self._checked(feed), target

    def _from_prompt_cache(self, target: str) -> Optional[list]:
        """Start the conversation from the prompt cache's longest prefix of it; the ids
        left to feed (None if it holds none)."""
        if self.prompt_cache is None:
            return None
        ids = encode_text(self.tokenizer, target)
        cache, start = self.prompt_cache.fetch(self.model, ids, self.kv_bits)
        if start == 0:
            return None
        self.cache, self._ids, self._text = cache, ids[:start], self.tokenizer.decode(ids[:start])
        return self._checked(ids[start:])

    def _checked(self, feed: list) -> list:
        if not feed:
            raise ValueError("nothing to generate from")
        if len(self._ids) + len(feed) > self.max_context:
            raise ValueError(f"the conversation needs {len(self._ids) + len(feed)} tokens but "
                             f"the context holds {self.max_context}; undo or clear")
        return feed

    def _checkpoints_for(self, messages, feed):
        """The prompt cache's recorder and cuts for this turn's prefill (message ends and
        every N tokens), or none."""
        self._recorded = {}
        if self.prompt_cache is None:
            return None, ()
        start = len(self._ids)
        ends = message_ends(self.tokenizer, messages, self.tools, self._ids + feed)
        cuts = self.prompt_cache.cuts(start, start + len(feed) - 1, ends)
        recorder = self.prompt_cache.recorder(self.cache, [start + c for c in cuts])
        self._recorded = recorder.points
        return recorder, cuts

    def _run(self, feed, target, messages):
        t0 = time.perf_counter()
        before, self._messages = self._messages, messages

        def undo():
            self._messages = before

        self._checkpoint()
        start = self._checkpoints[-1]
        tokens, texts, finish, first = [], [], None, None
        with wired_limit(self.model):
            recorder, cuts = self._checkpoints_for(messages, feed)
            try:
                prefill(self.model, self.cache, feed[:-1], self.prefill_step_size, recorder,
                        self.progress, cuts=cuts)
            except BaseException:
                self.cache.restore(start.mark)
                undo()
                raise
            self._ids, self._pending, self._text = self._ids + feed[:-1], feed[-1], target
            self._checkpoint()
            stream = stream_generate(
                self.model, self.tokenizer, [self._pending], cache=self.cache,
                sampling=self.sampling.update(seed=None), max_tokens=self.max_tokens,
                stop=self.stop, max_context=self.max_context, mtp=self.mtp,
                draft_tokens=self.draft_tokens, prefill_step_size=self.prefill_step_size)
            try:
                for r in stream:
                    first = first or time.perf_counter() - t0
                    tokens.append(r.token)
                    texts.append(r.text)
                    finish = r.finish_reason
                    self._last = SessionStats(
                        ttft=first, prompt_tokens=len(feed), prompt_tps=len(feed) / first,
                        generation_tokens=r.generation_tokens, generation_tps=r.generation_tps,
                        peak_memory=r.peak_memory)
                    yield r
            finally:
                stream.close()  # the cache now holds all but the last token (see token_stream)
                self._end_turn(tokens, texts, finish, undo)

    def _end_turn(self, tokens, texts, finish, undo):
        if not tokens:
            undo()
            return
        self._ids = self._ids + [self._pending] + tokens[:-1]
        self._pending = tokens[-1]
        eos = set(self.tokenizer.eos_token_ids)
        detok = exact_detokenizer(self.tokenizer)
        for t in tokens:
            if t not in eos:
                detok.add_token(t)
        detok.finalize()
        # what the cache holds, as text; a reply cut by a stop string holds more than
        # its message, so the next turn's prefix check fails and re-syncs from a checkpoint
        self._text += detok.text + (self.tokenizer.decode(tokens[-1:]) if tokens[-1] in eos
                                    else "")
        content = "".join(texts) if finish else detok.text
        self._messages.append({"role": "assistant", "content": content})
        if self.prompt_cache is not None:
            self.prompt_cache.store(self._ids, self.cache, self._recorded, self.kv_bits)
