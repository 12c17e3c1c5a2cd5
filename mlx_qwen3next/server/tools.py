"""Tool calls in the model's text: Qwen's `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
blocks, as OpenAI `tool_calls` (whole replies) or `delta.tool_calls` (streams).

A block whose JSON does not parse, or lacks a name, stays in the content as text.
"""

from __future__ import annotations

import json
import uuid
from typing import Optional

OPEN, CLOSE = "<tool_call>", "</tool_call>"


def parse_call(body: str) -> Optional[dict]:
    """An OpenAI tool call from one block's text, or None if it is not one."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": data["name"], "arguments": json.dumps(arguments,
                                                                       ensure_ascii=False)}}


def split_tool_calls(text: str) -> tuple[str, list[dict]]:
    """(content, tool calls) of a whole reply."""
    stream = ToolCallStream()
    content, calls = stream.feed(text)
    content += stream.finish()
    calls = [{k: v for k, v in c.items() if k != "index"} for c in calls]
    return (content.strip() if calls else content), calls


class ToolCallStream:
    """Feeds streamed text; returns what is content so far and the calls completed.
    Text that may begin a block is held back until it is known not to."""

    def __init__(self):
        self.pending = ""
        self.calls = 0

    def feed(self, text: str) -> tuple[str, list[dict]]:
        self.pending += text
        out, calls = [], []
        while True:
            start = self.pending.find(OPEN)
            if start < 0:
                cut = len(self.pending) - _partial_open(self.pending)
                out.append(self.pending[:cut])
                self.pending = self.pending[cut:]
                break
            out.append(self.pending[:start])
            self.pending = self.pending[start:]
            end = self.pending.find(CLOSE)
            if end < 0:
                break  # a block in progress: held back until it closes
            block = self.pending[: end + len(CLOSE)]
            self.pending = self.pending[end + len(CLOSE):]
            call = parse_call(block[len(OPEN): -len(CLOSE)].strip())
            if call is None:
                out.append(block)  # not a call after all: content
            else:
                calls.append({"index": self.calls, **call})
                self.calls += 1
        return "".join(out), calls

    def finish(self) -> str:
        """What is left at the end (an unclosed block is content)."""
        rest, self.pending = self.pending, ""
        return rest


def _partial_open(text: str) -> int:
    """How many trailing characters of `text` could start `<tool_call>`."""
    for n in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-n:]):
            return n
    return 0
