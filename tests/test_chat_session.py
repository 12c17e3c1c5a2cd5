"""ChatSession: turns reuse the cache and give what one call on the same tokens gives;
retry / undo go back through checkpoints; interruptions and bad input leave the
session usable; settings change at run time; save / load round-trips."""

from __future__ import annotations

import json

import pytest

import mlx_qwen3next  # noqa: F401
from mlx_qwen3next import ChatSession, generate, load, stream_generate

SYSTEM = "You are a helpful assistant."


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return load(tiny_checkpoint)


def session(tiny, **kw) -> ChatSession:
    model, tok = tiny
    return ChatSession(model, tok, system=SYSTEM, **{"temperature": 0.0, "max_tokens": 8,
                                                      "mtp": False, **kw})


def reply(s: ChatSession, text=None) -> str:
    return "".join(c.text for c in (s.send(text) if text is not None else s.retry()))


def stateless(tiny, messages, n=8) -> str:
    """The reply one call on the rendered conversation gives, with no session."""
    model, tok = tiny
    return generate(model, tok, messages, max_tokens=n, temperature=0.0, mtp=False)


def one_call(tiny, ids, n=8) -> list[int]:
    model, tok = tiny
    return [r.token for r in stream_generate(model, tok, ids, max_tokens=n, temperature=0.0,
                                             mtp=False)]


def test_turns_prefill_only_their_new_tokens(tiny):
    s = session(tiny)
    reply(s, "Hello!")
    used = s.stats.context_used
    reply(s, "What is the capital of France?")
    st = s.stats
    assert st.prompt_tokens < used  # not the whole conversation again
    assert st.context_used == used + st.prompt_tokens - 1 + st.generation_tokens
    assert st.max_context == 262144 and st.ttft > 0 and st.generation_tps > 0
    assert st.cache_bytes > 0 and st.snapshot_bytes > 0


def test_greedy_turns_equal_one_call_on_the_same_tokens(tiny):
    s = session(tiny)
    reply(s, "Hello!")
    reply(s, "How are you today?")
    before_reply = None
    tokens = []
    for c in s.send("Write a short poem about the sea."):
        if before_reply is None:
            before_reply = s.tokens[: len(s.tokens)]  # fixed once the reply starts
        tokens.append(c.token)
    # the conversation up to the reply, fed in one call, gives the same reply
    context = s.tokens[: len(s.tokens) - len(tokens)]
    assert context[-3:] == s.tokenizer.encode("<|im_start|>assistant\n",
                                              add_special_tokens=False)[-3:]
    assert one_call(tiny, context) == tokens


def test_retry_regenerates_the_same_greedy_reply(tiny):
    s = session(tiny)
    reply(s, "Hello!")
    first = reply(s, "What is the capital of France?")
    tokens = list(s.tokens)
    assert reply(s) == first and s.tokens == tokens
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant", "user", "assistant"]


def test_retry_samples_a_new_reply(tiny):
    s = session(tiny, temperature=1.0, top_p=1.0, top_k=0, seed=0, max_tokens=16)
    reply(s, "Hello!")
    first = s.messages[-1]["content"]
    assert any(reply(s) != first for _ in range(3))


def test_undo_is_as_if_the_turn_never_happened(tiny):
    a = session(tiny)
    reply(a, "Hello!")
    reply(a, "Write a short poem about the sea.")
    assert a.undo() == "Write a short poem about the sea."
    assert len(a.messages) == 3
    b = session(tiny)
    reply(b, "Hello!")
    assert reply(a, "What is the capital of France?") == reply(b, "What is the capital of France?")
    assert a.tokens == b.tokens
    with pytest.raises(ValueError, match="nothing to undo"):
        session(tiny).undo()
    with pytest.raises(ValueError, match="nothing to retry"):
        session(tiny).retry()


def test_an_interrupted_reply_is_kept_and_the_session_goes_on(tiny):
    s = session(tiny, max_tokens=20)
    reply(s, "Hello!")
    for i, _ in enumerate(s.send("Write a short poem about the sea.")):
        if i == 2:
            break  # the iterator is dropped: the reply stops here
    assert s.messages[-1]["role"] == "assistant"
    assert len(s.tokens) == s.cache.offset + 1
    partial = s.tokens
    # the next turn continues from exactly what the model saw
    nxt = []
    for c in s.send("Thanks"):
        nxt.append(c.token)
    context = s.tokens[: len(s.tokens) - len(nxt)]
    assert context[: len(partial)] == partial
    assert one_call(tiny, context, 20) == nxt


def test_ctrl_c_during_prefill_drops_the_turn(tiny):
    model, tok = tiny
    s = session(tiny)
    first = reply(s, "Hello!")
    messages, tokens = s.messages, s.tokens

    real = model.hidden

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    model.hidden = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            reply(s, "A long message that needs a prefill of several tokens.")
    finally:
        model.hidden = real
    assert s.messages == messages and s.tokens == tokens
    again = session(tiny)
    assert reply(again, "Hello!") == first
    assert reply(s, "Thanks") == reply(again, "Thanks")


def test_bad_input_keeps_the_session_usable(tiny):
    s = session(tiny)
    reply(s, "Hello!")
    state = (s.messages, s.tokens)
    for bad in ("", "   ", "bad \udcff text", None):
        with pytest.raises(ValueError):
            s.send(bad)
    assert (s.messages, s.tokens) == state
    for key, value in (("temperature", -1), ("top_p", 0), ("top_p", 2), ("top_k", -3),
                       ("max_tokens", 0), ("colour", "blue")):
        with pytest.raises(ValueError) as err:
            s.set(key, value)
        assert "\n" not in str(err.value)
    short = session(tiny, max_context=60)
    reply(short, "Hi")
    with pytest.raises(ValueError, match="context holds 60"):
        short.send("The quick brown fox jumps over the lazy dog. " * 3)
    assert len(short.messages) == 3
    clean = session(tiny, max_context=60)
    reply(clean, "Hi")
    assert reply(short, "Hi") == reply(clean, "Hi")  # the refused turn left no trace
    clean = session(tiny)
    reply(clean, "Hello!")
    assert reply(s, "Thanks") == reply(clean, "Thanks") and len(s.messages) == 5


def test_settings_change_at_run_time(tiny):
    s = session(tiny)
    s.set("temperature", 0.5)
    s.set("top_k", 1)
    s.set("max_tokens", 3)
    s.set("stop", ["\n"])
    assert s.settings["temperature"] == 0.5 and s.settings["top_k"] == 1
    assert len(list(s.send("Hello!"))) <= 3
    s.set("system", "Answer in French.")
    assert s.messages[0] == {"role": "system", "content": "Answer in French."}
    reply(s, "Hi")  # the new system prompt re-syncs the cache from the start
    assert s.tokens[:4] == s.tokenizer.encode("<|im_start|>system\nAnswer",
                                              add_special_tokens=False)[:4]


def test_clear_keeps_the_system_prompt(tiny):
    s = session(tiny)
    first = reply(s, "Hello!")
    reply(s, "More")
    s.clear()
    assert s.messages == [{"role": "system", "content": SYSTEM}] and s.cache.offset == 0
    assert reply(s, "Hello!") == first


def test_snapshots_are_bounded(tiny):
    s = session(tiny, max_snapshots=3, max_tokens=2)
    for i in range(6):
        reply(s, f"Message {i}")
    assert len(s._checkpoints) <= 3
    per_mark = s._checkpoints[-1].mark.nbytes
    assert 0 < s.stats.snapshot_bytes <= 3 * per_mark
    assert len(s.undo()) and len(s.undo())  # older turns: undone by re-prefilling
    asked = s.messages + [{"role": "user", "content": "Hello"}]
    assert reply(s, "Hello") == stateless(tiny, asked, n=2)


def test_save_and_load_round_trip(tiny, tmp_path):
    s = session(tiny, top_p=0.9)
    reply(s, "Hello!")
    reply(s, "Caf\u00e9 \u4e2d\u6587?")
    path = tmp_path / "chat.json"
    s.save(path)
    t = session(tiny)
    t.load(path)
    assert t.messages == s.messages and t.settings == s.settings
    assert json.loads(path.read_text())["messages"][3]["content"] == "Caf\u00e9 \u4e2d\u6587?"
    asked = t.messages + [{"role": "user", "content": "Thanks"}]
    assert reply(t, "Thanks") == stateless(tiny, asked) and len(t.messages) == 7
    (tmp_path / "bad.json").write_text('{"messages": "nope"}')
    with pytest.raises(ValueError, match="not a saved chat"):
        t.load(tmp_path / "bad.json")
    assert len(t.messages) == 7


def test_save_replaces_the_file_whole_or_not_at_all(tiny, tmp_path, monkeypatch):
    s = session(tiny)
    reply(s, "Hello!")
    path = tmp_path / "chat.json"
    s.save(path)
    before = path.read_text()
    reply(s, "More")
    real_write = type(path).write_text

    def full_disk(self, text, *a, **k):  # the disk fills up half way through the write
        real_write(self, text[: len(text) // 2], *a, **k)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(path), "write_text", full_disk)
    with pytest.raises(ValueError, match="No space left on device.*previous save there is "
                                         "unchanged"):
        s.save(path)
    monkeypatch.undo()
    assert path.read_text() == before and json.loads(before)["messages"]
    assert [p.name for p in tmp_path.iterdir()] == ["chat.json"]  # no temporary left
    assert len(s.messages) == 5 and reply(s, "Again")  # the session goes on


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(format="other"), "format is not"),
    (lambda d: d["messages"].append({"role": "wizard", "content": "x"}), "role 'wizard'"),
    (lambda d: d["messages"].append({"role": "user", "content": 3}), "content must be text"),
    (lambda d: d["settings"].update(temperature=-1), "temperature must be >= 0"),
    (lambda d: d["settings"].update(colour="blue"), "unknown setting 'colour'"),
    (lambda d: d.update(tools="get_weather"), "tools must be a list"),
])
def test_a_bad_file_leaves_the_conversation_as_it_was(tiny, tmp_path, change, words):
    s = session(tiny)
    reply(s, "Hello!")
    path = tmp_path / "chat.json"
    s.save(path)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    state = (s.messages, s.settings, s.tokens)
    with pytest.raises(ValueError, match=words):
        s.load(path)
    assert (s.messages, s.settings, s.tokens) == state
    clean = session(tiny)
    reply(clean, "Hello!")
    assert reply(s, "More") == reply(clean, "More")


def test_stats_follow_undo_and_load(tiny, tmp_path):
    model, tok = tiny
    s = session(tiny)
    reply(s, "Hello!")
    one_turn = s.stats.context_used
    reply(s, "And again, at more length this time")
    assert s.stats.context_used > one_turn
    s.undo()
    rendered = tok.apply_chat_template(s.messages, tokenize=False)
    assert s.stats.context_used == len(tok.encode(rendered, add_special_tokens=False))
    assert s.stats.generation_tokens == 0  # the undone turn's figures are gone
    path = tmp_path / "chat.json"
    s.save(path)
    t = session(tiny)
    t.load(path)
    assert t.stats.context_used == len(tok.encode(rendered, add_special_tokens=False))


def test_a_tool_result_continues_the_chat_like_one_call(tiny):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    s = session(tiny, tools=tools)
    with pytest.raises(ValueError, match="no reply to answer"):
        s.tool_result('{"t": 1}')
    first = reply(s, "Weather in Lyon?")
    with pytest.raises(ValueError, match="tool result is empty"):
        s.tool_result("  ")
    prompt_before = s.stats.context_used
    answer = "".join(c.text for c in s.tool_result('{"temperature": 18}'))
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert s.messages[2]["content"] == first and s.messages[4]["content"] == answer
    assert s.stats.prompt_tokens < prompt_before  # only the tool turn was prefilled
    model, tok = tiny
    assert answer == generate(model, tok, s.messages[:4], max_tokens=8, temperature=0.0,
                              mtp=False, tools=tools)
    assert s.undo() == "Weather in Lyon?" and [m["role"] for m in s.messages] == ["system"]
