"""The test tokenizer's chat template renders Qwen3-Next's conventions, through
transformers' own renderer: tools one per line, tool calls as `<tool_call>` JSON blocks
(string arguments not encoded twice), tool results as `<tool_response>` blocks in one
user turn, and the tool tags kept when special tokens are skipped."""

import json

import pytest
from transformers import AutoTokenizer

from mlx_qwen3next.testing.tokenizer_files import write_tokenizer

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "d",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
OTHER = {"type": "function", "function": {"name": "get_time", "parameters": {}}}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    write_tokenizer(path)
    return AutoTokenizer.from_pretrained(path)


def call(arguments):
    return {"type": "function", "function": {"name": "get_weather", "arguments": arguments}}


def test_tools_are_listed_one_per_line(tok):
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tools=[TOOL, OTHER],
                                   tokenize=False)
    lines = text.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0].split("\n")
    assert [json.loads(x)["function"]["name"] for x in lines] == ["get_weather", "get_time"]


def test_tool_calls_and_results(tok):
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [
            call({"city": "Paris"}), call('{"city": "Rome"}')]},
        {"role": "tool", "content": '{"t": 3}'},
        {"role": "tool", "content": '{"t": 5}'},
    ]
    text = tok.apply_chat_template(messages, tools=[TOOL], tokenize=False,
                                   add_generation_prompt=True)
    assert ("<|im_start|>assistant\n"
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
            "<|im_end|>\n") in text
    assert text.endswith(
        "<|im_start|>user\n<tool_response>\n{\"t\": 3}\n</tool_response>\n"
        "<tool_response>\n{\"t\": 5}\n</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_tool_tags_survive_skipping_special_tokens(tok):
    text = '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call><|im_end|>'
    decoded = tok.decode(tok(text)["input_ids"], skip_special_tokens=True)
    assert decoded == '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
