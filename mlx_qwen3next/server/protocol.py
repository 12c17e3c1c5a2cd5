"""The OpenAI request shapes, checked, as our generation's arguments; and the response
and error shapes. A bad request is an `APIError` with its HTTP status."""

from __future__ import annotations

import json
import time
import uuid
from typing import Optional

SAMPLING = ("temperature", "top_p", "top_k", "min_p", "presence_penalty",
            "repetition_penalty", "seed")


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None, headers=None):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.param, self.code, self.headers = param, code, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


def parse_json(raw: bytes) -> dict:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"the body is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object")
    return data


def generation_args(req: dict, model_name: str) -> dict:
    """stream_generate's keywords from a request: sampling, stop, max_tokens, MTP."""
    if req.get("model") not in (None, "", model_name):
        raise APIError(404, f"model {req.get('model')!r} is not served here (this serves "
                            f"{model_name!r}; see /v1/models)", code="model_not_found",
                       param="model")
    if req.get("n", 1) != 1:
        raise APIError(400, "n must be 1", param="n")
    args = {k: req[k] for k in SAMPLING if req.get(k) is not None}
    limit = req.get("max_completion_tokens", req.get("max_tokens"))
    args["max_tokens"] = 512 if limit is None else limit
    if req.get("stop") is not None:
        args["stop"] = req["stop"]
    for key in ("mtp", "draft_tokens"):  # extensions
        if req.get(key) is not None:
            args[key] = req[key]
    return args


def chat_messages(req: dict) -> list[dict]:
    """The request's messages in the chat template's terms: text content, tool calls with
    their arguments as objects."""
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise APIError(400, f"messages[{i}] must be an object", param="messages")
        m = dict(m)
        if isinstance(m.get("content"), list):  # content parts: the text ones
            m["content"] = "".join(p.get("text", "") for p in m["content"]
                                   if isinstance(p, dict) and p.get("type") == "text")
        if m.get("tool_calls"):
            m["tool_calls"] = [_call_for_template(c, i) for c in m["tool_calls"]]
        out.append(m)
    return out


def _call_for_template(call, i) -> dict:
    try:
        fn = call["function"]
        arguments = fn.get("arguments") or "{}"
        arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
        return {"id": call.get("id"), "type": "function",
                "function": {"name": fn["name"], "arguments": arguments}}
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError):
        raise APIError(400, f"messages[{i}].tool_calls is malformed",
                       param="messages") from None


def tools_for(req: dict) -> Optional[list]:
    tools, choice = req.get("tools"), req.get("tool_choice", "auto")
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise APIError(400, "tools must be a list of tool definitions", param="tools")
    return None if choice == "none" else tools


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt: int, completion: int, cached: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def envelope(kind: str, rid: str, model: str, choices: list, extra=None) -> dict:
    return {"id": rid, "object": kind, "created": int(time.time()), "model": model,
            "choices": choices, **(extra or {})}
