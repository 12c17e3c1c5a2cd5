"""The prompt cache never changes a result: greedy output from a warm cache equals cold
output token for token, reused at message boundaries, at mid-document checkpoints,
after an undo, after an eviction; and it prefills only what it does not hold."""

from __future__ import annotations

import numpy as np
import pytest

import mlx_qwen3next  # noqa: F401
import mlx.core as mx
from mlx_qwen3next import load, stream_generate
from mlx_qwen3next.generation.prompt_cache import MIN_GAP, PromptCache

GREEDY = dict(temperature=0.0, max_tokens=8)


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return load(tiny_checkpoint)


def run(tiny, prompt, **kw):
    model, tok = tiny
    out = list(stream_generate(model, tok, prompt, **{**GREEDY, **kw}))
    return [r.token for r in out], out[-1]


def chat(*turns):
    messages = [{"role": "system", "content": "You are terse."}]
    for i, t in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": t})
    return messages


@pytest.mark.parametrize("mtp", [False, True])
def test_follow_up_turn_reuses_the_conversation(tiny, mtp):
    pc = PromptCache(max_bytes=1 << 30)
    first = chat("Hello there, how are you?")
    cold_first, last = run(tiny, first, mtp=mtp, prompt_cache=pc)
    assert last.cached_tokens == 0 and pc.entries
    follow = chat("Hello there, how are you?", "Fine.", "Tell me more about it")
    warm, last = run(tiny, follow, mtp=mtp, prompt_cache=pc)
    cold, _ = run(tiny, follow, mtp=mtp)
    assert warm == cold
    model, tok = tiny
    first_ids = tok.apply_chat_template(first[:2], tokenize=False)
    assert last.cached_tokens >= len(tok.encode(first_ids, add_special_tokens=False))
    assert last.prompt_tokens == len(tok.encode(tok.apply_chat_template(
        follow, tokenize=False, add_generation_prompt=True), add_special_tokens=False))


def test_mid_document_checkpoints(tiny):
    model, tok = tiny
    rng = np.random.default_rng(0)
    document = rng.integers(10, 400, 300).tolist()
    pc = PromptCache(max_bytes=1 << 30, every=64)
    run(tiny, document + [5, 6, 7], prompt_cache=pc)
    diverged = document[:200] + [8, 9, 10, 11]  # differs from token 200 on
    warm, last = run(tiny, diverged, prompt_cache=pc)
    assert last.cached_tokens == 192  # the last checkpoint before the divergence
    assert warm == run(tiny, diverged)[0]


def test_repeat_and_undo_like_prefixes(tiny):
    """The same prompt again (all but its last token reused), then a shorter one (an
    undo: the conversation minus its last turn), which restarts from a message's end
    (messages long enough for checkpoints, MIN_GAP tokens apart)."""
    pc = PromptCache(max_bytes=1 << 30)
    said = lambda word: f"{word}: " + "and so on, " * MIN_GAP
    long = chat(*map(said, ("One", "Two", "Three", "Four", "Five")))
    run(tiny, long, prompt_cache=pc)
    again, last = run(tiny, long, prompt_cache=pc)
    assert again == run(tiny, long)[0] and last.cached_tokens == last.prompt_tokens - 1
    undone = chat(*map(said, ("One", "Two", "Three")))
    warm, last = run(tiny, undone, prompt_cache=pc)
    assert 0 < last.cached_tokens < last.prompt_tokens and warm == run(tiny, undone)[0]


def test_checkpoints_at_least_min_gap_apart():
    """Chunk ends for a prefill of positions 100..300: message ends (and every `every`
    tokens) no closer than MIN_GAP to the last kept one or to the end, then the end."""
    pc = PromptCache(max_bytes=1 << 20, every=128)
    ends = [103, 140, 150, 200, 290]  # 103: too near the start, 150: to 140, 290: to the end
    assert pc.cuts(100, 300, ends) == [p - 100 for p in (140, 200, 256, 300)]
    assert pc.cuts(100, 110, ends) == [10]  # a short suffix: one chunk
    assert pc.cuts(300, 300, ends) == []


def test_eviction_under_a_small_budget(tiny):
    model, tok = tiny
    probe = PromptCache(max_bytes=1 << 30)
    run(tiny, chat("a first prompt of some length"), prompt_cache=probe)
    one = probe.nbytes
    pc = PromptCache(max_bytes=int(one * 1.5))  # room for one entry, not two
    a, b = chat("a first prompt of some length"), chat("an unrelated second prompt")
    run(tiny, a, prompt_cache=pc)
    run(tiny, b, prompt_cache=pc)
    assert len(pc.entries) == 1 and pc.nbytes <= pc.max_bytes
    warm, last = run(tiny, a, prompt_cache=pc)  # evicted: a cold start, same result
    assert warm == run(tiny, a)[0]
    assert pc.nbytes <= pc.max_bytes
    mx.clear_cache()
    held = mx.get_active_memory()
    for i in range(8):  # many distinct prompts: memory stays at the budget, not their sum
        run(tiny, chat(f"prompt number {i} of a series, each of them different"),
            prompt_cache=pc)
        assert pc.nbytes <= pc.max_bytes
    mx.clear_cache()
    assert mx.get_active_memory() - held <= pc.max_bytes


def test_quantized_kv_entries_are_kept_apart(tiny):
    pc = PromptCache(max_bytes=1 << 30)
    p = chat("Hello there")
    run(tiny, p, prompt_cache=pc)
    _, last = run(tiny, p, prompt_cache=pc, kv_bits=8)
    assert last.cached_tokens == 0  # the float entry does not serve an 8-bit cache
    warm, last = run(tiny, p, prompt_cache=pc, kv_bits=8)
    assert last.cached_tokens > 0 and warm == run(tiny, p, kv_bits=8)[0]


def test_bad_arguments(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="cache or prompt_cache, not both"):
        stream_generate(model, tok, "hi", cache=model.make_cache(), prompt_cache=PromptCache())
    with pytest.raises(ValueError, match="every must be a positive integer"):
        PromptCache(every=0)


def test_chat_sessions_share_it_and_resume_from_disk(tiny, tmp_path):
    from mlx_qwen3next import ChatSession

    model, tok = tiny
    pc = PromptCache(max_bytes=1 << 30)

    def session(**kw):
        return ChatSession(model, tok, system="Be brief.", temperature=0.0, max_tokens=6,
                           mtp=False, **kw)

    def reply(s, text):
        return [r.token for r in s.send(text)]

    a = session(prompt_cache=pc)
    reply(a, "The first question is about memory.")
    reply(a, "And the second one?")
    saved = tmp_path / "a.json"
    a.save(saved)
    b = session(prompt_cache=pc)  # the same conversation, loaded: re-prefilled from the cache
    b.load(saved)
    cold = session()
    cold.load(saved)
    warm_third = reply(b, "A third.")
    assert warm_third == reply(cold, "A third.")
    assert b.stats.prompt_tokens < cold.stats.prompt_tokens  # only the new turn prefilled
    assert reply(b, "Fourth.") == reply(cold, "Fourth.")
    b.undo()  # undo and retry keep working on top of it
    cold.undo()
    assert reply(b, "Fourth.") == reply(cold, "Fourth.")
    file = tmp_path / "b.safetensors"
    b.save_cache(file)
    c = session()
    c.load_cache(file)
    assert c.messages == b.messages and c.tokens == b.tokens
    assert reply(c, "Fifth.") == reply(b, "Fifth.")


def message_ends_by_encoding_each(tokenizer, messages, tools, ids):
    """The definition message_ends computes with one encoding: each message's rendering
    encoded on its own and found at the start of `ids`."""
    from mlx_qwen3next.generation.prompt import encode_text, render_chat

    out = []
    for i in range(1, len(messages) + 1):
        head = encode_text(tokenizer, render_chat(tokenizer, messages[:i], tools,
                                                  add_generation_prompt=False))
        if head == ids[: len(head)]:
            out.append(len(head))
    return out


TOOL = {"type": "function", "function": {"name": "get_weather", "description": "d",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CHATS = [
    (chat("Hello there, how are you?", "Fine, thanks.", "And the weather  in Paris?\n"), None),
    (chat("Ünïcödé — ok?", "Oui, très bien ✓", "  spaces  ", "\n\nnew lines\n"), None),
    ([{"role": "user", "content": "Weather in Rome?"},
      {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
          "name": "get_weather", "arguments": {"city": "Rome"}}}]},
      {"role": "tool", "content": '{"t": 3}'},
      {"role": "assistant", "content": "It is 3 degrees."},
      {"role": "user", "content": "Thanks"}], [TOOL]),
]


@pytest.mark.parametrize("which", ["tiny", "trained"])
def test_message_ends_equal_encoding_each_message(tiny, which):
    """One encoding with offsets finds the same ends as encoding every message's
    rendering, also when the ids stop following the rendering (a reply kept as
    generated, here one id changed)."""
    from pathlib import Path

    from mlx_qwen3next.checkpoints.tokenizer import load_tokenizer
    from mlx_qwen3next.generation.prompt import encode_prompt
    from mlx_qwen3next.generation.prompt_cache import message_ends

    model, tok = tiny
    if which == "trained":
        import mlx_qwen3next

        tok = load_tokenizer(Path(mlx_qwen3next.__file__).parent / "assets" / "qwen3next-tiny",
                             model.config)
    for messages, tools in CHATS:
        ids = encode_prompt(tok, messages, 1 << 30, tools)
        ends = message_ends(tok, messages, tools, ids)
        assert ends == message_ends_by_encoding_each(tok, messages, tools, ids)
        assert len(ends) == len(messages)
        changed = list(ids)
        changed[ends[1] + 1] = (changed[ends[1] + 1] + 1) % 100
        assert message_ends(tok, messages, tools, changed) == ends[:2] == \
            message_ends_by_encoding_each(tok, messages, tools, changed)
