"""The OpenAI-compatible HTTP API on Starlette: /v1/models, /v1/chat/completions,
/v1/completions and /health, with SSE streaming, tool calls, optional bearer-key auth,
optional CORS and a body size limit. Every error is OpenAI's error JSON."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Optional

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from .engine import Engine, Job, Token
from .protocol import (
    APIError, chat_messages, envelope, generation_args, new_id, parse_json, tools_for, usage,
)
from .tools import ToolCallStream, split_tool_calls

MAX_BODY = 16 << 20


def make_app(engine: Engine, api_key: Optional[str] = None, cors: Optional[str] = None,
             max_body: int = MAX_BODY) -> Starlette:
    async def health(request):
        return JSONResponse({"status": "ok", "model": engine.name,
                             "queued": engine.queued, "running": len(engine.running),
                             "peak_batch": engine.peak_batch})

    async def models(request):
        return JSONResponse({"object": "list", "data": [
            {"id": engine.name, "object": "model", "created": 0, "owned_by": "mlx-qwen3next"}]})

    async def chat(request):
        req = await read_json(request, max_body)
        job = Job(chat_messages(req), generation_args(req, engine.name), tools_for(req),
                  top_logprobs=_top_logprobs(req))
        return await respond(request, engine, job, req, chat_shapes)

    async def completions(request):
        req = await read_json(request, max_body)
        prompt = req.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) and not (isinstance(prompt, list) and prompt and all(
                isinstance(t, int) for t in prompt)):
            raise APIError(400, "prompt must be text or a list of token ids", param="prompt")
        job = Job(prompt, generation_args(req, engine.name))
        return await respond(request, engine, job, req, completion_shapes)

    routes = [Route("/health", health), Route("/v1/models", models),
              Route("/v1/chat/completions", chat, methods=["POST"]),
              Route("/v1/completions", completions, methods=["POST"])]
    middleware = [Middleware(CORSMiddleware, allow_origins=[cors], allow_methods=["*"],
                             allow_headers=["*"])] if cors else []
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={
        APIError: api_error, 404: not_found, 405: not_allowed, Exception: server_error})
    if api_key:
        app.add_middleware(BearerKey, key=api_key)
    app.state.engine = engine
    return app


class BearerKey:
    """Answers 401 unless the request carries `Authorization: Bearer KEY` (/health is
    open, for probes)."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path") != "/health":
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"").decode("latin-1")
            if given != f"Bearer {self.key}":
                error = APIError(401, "a valid API key is required (Authorization: Bearer "
                                      "KEY)", kind="authentication_error")
                await api_error(None, error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def read_json(request: Request, limit: int) -> dict:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise APIError(413, f"the body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, f"the body is larger than {limit} bytes")
    return parse_json(bytes(body))


async def respond(request, engine: Engine, job: Job, req: dict, shapes):
    """Queue the job, wait for its first event (an error still has its status), then
    answer whole or as a stream."""
    if not isinstance(req.get("stream", False), bool):
        raise APIError(400, "stream must be true or false", param="stream")
    started = time.perf_counter()
    engine.submit(job)
    watcher = asyncio.create_task(watch_disconnect(request, job))  # gone while queued, too
    try:
        first = await job.events.get()
        if isinstance(first, APIError):
            raise first
        kind, rid = shapes.kind, new_id(shapes.prefix)
        if req.get("stream"):
            watcher.cancel()  # the stream notices its own disconnect
            include = bool((req.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(stream_events(request, job, first, shapes, rid,
                                                   engine.name, include, started),
                                     media_type="text/event-stream")
        tokens = await collect(job, first)
    finally:
        watcher.cancel()
    body = shapes.whole(tokens, rid, engine.name)
    log(request, 200, tokens, started)
    return JSONResponse(envelope(kind, rid, engine.name, body["choices"],
                                 {"usage": body["usage"]}))


async def collect(job: Job, first) -> list[Token]:
    tokens, item = [], first
    while item is not None:
        if isinstance(item, APIError):
            raise item
        tokens.append(item)
        item = await job.events.get()
    return tokens


async def watch_disconnect(request: Request, job: Job):
    while not job.cancelled.is_set():
        if await request.is_disconnected():
            job.cancelled.set()
            return
        await asyncio.sleep(0.1)


async def stream_events(request, job: Job, first, shapes, rid, model, include_usage, started):
    tokens, item = [], first
    state = shapes.stream_state()
    try:
        yield sse(envelope(shapes.chunk, rid, model, [shapes.opening()]))
        while item is not None:
            if isinstance(item, APIError):  # after the first token: reported in the stream
                yield sse(item.body())
                break
            tokens.append(item)
            for choice in shapes.deltas(state, item):
                yield sse(envelope(shapes.chunk, rid, model, [choice]))
            item = await job.events.get()
        if tokens:
            for choice in shapes.closing(state, tokens[-1]):
                yield sse(envelope(shapes.chunk, rid, model, [choice]))
        if include_usage and tokens:
            last = tokens[-1]
            yield sse(envelope(shapes.chunk, rid, model, [], {"usage": usage(
                last.prompt_tokens, last.generation_tokens, last.cached_tokens)}))
        yield "data: [DONE]\n\n"
        log(request, 200, tokens, started)
    except BaseException:
        print(f"{request.method} {request.url.path} client gone after {len(tokens)} sent, "
              f"{job.produced} generated tokens", file=sys.stderr, flush=True)
        raise
    finally:
        job.cancelled.set()  # a client gone mid-stream stops its generation


def sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def log(request, status, tokens, started):
    last = tokens[-1] if tokens else None
    drafted = sum(t.from_draft for t in tokens)
    counts = (f"{last.prompt_tokens} prompt ({last.cached_tokens} cached) + "
              f"{last.generation_tokens} generated tokens ({drafted} from MTP drafts)"
              if last else "no tokens")
    print(f"{request.method} {request.url.path} {status} {counts} in "
          f"{time.perf_counter() - started:.2f} s", file=sys.stderr, flush=True)


def _top_logprobs(req) -> Optional[int]:
    if not req.get("logprobs"):
        return None
    top = req.get("top_logprobs", 0) or 0
    if not isinstance(top, int) or not 0 <= top <= 20:
        raise APIError(400, "top_logprobs must be an integer from 0 to 20", param="top_logprobs")
    return top


# -- the two response shapes ---------------------------------------------------------------

class chat_shapes:
    kind, chunk, prefix = "chat.completion", "chat.completion.chunk", "chatcmpl"

    @staticmethod
    def whole(tokens, rid, model):
        content, calls = split_tool_calls("".join(t.text for t in tokens))
        message = {"role": "assistant", "content": content if content or not calls else None}
        if calls:
            message["tool_calls"] = calls
        last = tokens[-1]
        choice = {"index": 0, "message": message,
                  "finish_reason": "tool_calls" if calls else last.finish_reason,
                  "logprobs": _logprobs(tokens)}
        return {"choices": [choice], "usage": usage(last.prompt_tokens, last.generation_tokens,
                                                    last.cached_tokens)}

    @staticmethod
    def stream_state():
        return {"tools": ToolCallStream(), "called": False}

    @staticmethod
    def opening():
        return {"index": 0, "delta": {"role": "assistant", "content": ""},
                "finish_reason": None}

    @staticmethod
    def deltas(state, t: Token):
        text, calls = state["tools"].feed(t.text)
        out = []
        if text:
            out.append({"index": 0, "delta": {"content": text}, "finish_reason": None,
                        "logprobs": {"content": [t.logprob]} if t.logprob else None})
        if calls:
            state["called"] = True
            out.append({"index": 0, "delta": {"tool_calls": calls}, "finish_reason": None})
        return out

    @staticmethod
    def closing(state, last: Token):
        rest = state["tools"].finish()
        out = [{"index": 0, "delta": {"content": rest}, "finish_reason": None}] if rest else []
        reason = "tool_calls" if state["called"] else (last.finish_reason or "stop")
        return out + [{"index": 0, "delta": {}, "finish_reason": reason}]


class completion_shapes:
    kind, chunk, prefix = "text_completion", "text_completion", "cmpl"

    @staticmethod
    def whole(tokens, rid, model):
        last = tokens[-1]
        choice = {"index": 0, "text": "".join(t.text for t in tokens), "logprobs": None,
                  "finish_reason": last.finish_reason}
        return {"choices": [choice], "usage": usage(last.prompt_tokens, last.generation_tokens,
                                                    last.cached_tokens)}

    @staticmethod
    def stream_state():
        return {}

    @staticmethod
    def opening():
        return {"index": 0, "text": "", "logprobs": None, "finish_reason": None}

    @staticmethod
    def deltas(state, t: Token):
        return [{"index": 0, "text": t.text, "logprobs": None, "finish_reason": None}] \
            if t.text else []

    @staticmethod
    def closing(state, last: Token):
        return [{"index": 0, "text": "", "logprobs": None,
                 "finish_reason": last.finish_reason or "stop"}]


def _logprobs(tokens) -> Optional[dict]:
    if not tokens or tokens[0].logprob is None:
        return None
    return {"content": [t.logprob for t in tokens]}


# -- errors ------------------------------------------------------------------------------

def api_error(request, e: APIError):
    if request is not None:
        print(f"{request.method} {request.url.path} {e.status} {e.message}", file=sys.stderr,
              flush=True)
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def not_found(request, e):
    return api_error(request, APIError(404, f"no such route: {request.url.path}",
                                       code="not_found"))


def not_allowed(request, e):
    return api_error(request, APIError(405, f"{request.method} is not allowed on "
                                            f"{request.url.path}"))


def server_error(request, e):
    print(f"{request.method} {request.url.path} 500: {type(e).__name__}: {e}",
          file=sys.stderr, flush=True)
    return api_error(request, APIError(500, "internal server error", kind="server_error"))
