"""Tool calls in model text: whole replies and streams (fed in pieces of every size)
give the same calls; no raw <tool_call> text leaks into a stream's content; malformed
blocks stay content."""

from __future__ import annotations

import json

import pytest

from mlx_qwen3next.server.tools import ToolCallStream, split_tool_calls

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zanbria"}}\n</tool_call>'


def streamed(text: str, piece: int):
    s, content, calls = ToolCallStream(), [], []
    for i in range(0, len(text), piece):
        c, k = s.feed(text[i:i + piece])
        content.append(c)
        calls += k
    content.append(s.finish())
    return "".join(content), calls


@pytest.mark.parametrize("piece", [1, 2, 5, 11, 1000])
def test_calls_streamed_in_any_pieces(piece):
    text = "Let me check.\n" + CALL + "\n" + CALL.replace("Zanbria", "Paris")
    content, calls = streamed(text, piece)
    assert "<tool_call" not in content and content.strip() == "Let me check."
    assert [json.loads(c["function"]["arguments"])["city"] for c in calls] == ["Zanbria",
                                                                             "Paris"]
    assert [c["index"] for c in calls] == [0, 1]
    whole_content, whole_calls = split_tool_calls(text)
    assert whole_content == "Let me check." and len(whole_calls) == 2
    assert whole_calls[0]["function"]["name"] == "get_weather"
    assert whole_calls[0]["id"].startswith("call_") and "index" not in whole_calls[0]


@pytest.mark.parametrize("text", [
    "<tool_call>{not json}</tool_call>",
    '<tool_call>{"arguments": {}}</tool_call>',  # no name
    "<tool_call>{\"name\": \"x\"",  # never closed
    "a < b and <tool_ca",  # looks like the start of one, is not
])
def test_malformed_blocks_are_content(text):
    assert split_tool_calls(text) == (text, [])
    for piece in (1, 3, 100):
        assert streamed(text, piece) == (text, [])
