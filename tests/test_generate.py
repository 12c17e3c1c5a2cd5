"""Greedy generation is the same however the work is split: one call or several calls
that reuse the cache, any prefill chunk size, after restoring a snapshot. Plus the
token loop's contract on early stops."""

from __future__ import annotations

import numpy as np
import pytest

import mlx_qwen3next  # noqa: F401
import mlx.core as mx
from mlx_qwen3next import generate, load, stream_generate
from mlx_qwen3next.generation import prefill, token_stream
from mlx_qwen3next.generation.sampling import SamplingConfig

GREEDY = dict(temperature=0.0, mtp=False)


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return load(tiny_checkpoint)


def prompt_ids(n: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(0, 490, n).tolist()


def greedy_tokens(model, tokenizer, prompt, n, **kw) -> list[int]:
    out = [r.token for r in stream_generate(model, tokenizer, prompt, max_tokens=n,
                                            **GREEDY, **kw)]
    return out


def reference_tokens(model, ids, n) -> list[int]:
    """Greedy by full recomputation (no cache): the oracle."""
    ids = list(ids)
    out = []
    for _ in range(n):
        logits = model(mx.array([ids]))
        out.append(int(mx.argmax(logits[0, -1]).item()))
        ids.append(out[-1])
    return out


def test_greedy_matches_full_recomputation(tiny):
    model, tok = tiny
    ids = prompt_ids(40)
    assert greedy_tokens(model, tok, ids, 12) == reference_tokens(model, ids, 12)


def test_one_call_equals_calls_that_reuse_the_cache(tiny):
    model, tok = tiny
    ids = prompt_ids(50, seed=1)
    whole = greedy_tokens(model, tok, ids, 24)
    cache, got, feed = model.make_cache(), [], ids
    for _ in range(3):
        part = greedy_tokens(model, tok, feed, 8, cache=cache)
        got += part
        feed = part[-1:]  # the cache holds all but the last token: feed it next
        assert cache.offset == len(ids) + len(got) - 1
    assert got == whole


@pytest.mark.parametrize("step", [1, 7, 64, 2048])
def test_prefill_chunk_size_does_not_change_greedy_output(tiny, step):
    model, tok = tiny
    ids = prompt_ids(150, seed=2)
    want = greedy_tokens(model, tok, ids, 10)
    assert greedy_tokens(model, tok, ids, 10, prefill_step_size=step) == want


def test_mark_restore_then_regenerate_is_identical(tiny):
    model, tok = tiny
    ids = prompt_ids(30, seed=3)
    cache = model.make_cache()
    first = greedy_tokens(model, tok, ids, 6, cache=cache)
    snap = cache.mark()
    cont = greedy_tokens(model, tok, first[-1:], 10, cache=cache)
    greedy_tokens(model, tok, [5, 6, 7], 10, cache=cache)  # wander off
    cache.restore(snap)
    assert greedy_tokens(model, tok, first[-1:], 10, cache=cache) == cont


def _loop(model, ids, cache, n):
    sampler = SamplingConfig(temperature=0.0).sampler()
    return token_stream(model, ids, cache, sampler, max_tokens=n)


def test_closing_the_loop_early_leaves_all_but_the_last_token(tiny):
    model, _ = tiny
    ids = prompt_ids(20, seed=4)
    cache = model.make_cache()
    gen = _loop(model, ids, cache, 50)
    got = [next(gen)[0] for _ in range(5)]
    gen.close()
    assert cache.offset == len(ids) + 4
    # continuing from there by feeding the last token gives the uninterrupted sequence
    rest = [t for t, _ in _loop(model, got[-1:], cache, 5)]
    assert got + rest == reference_tokens(model, ids, 10)


def test_an_exception_inside_the_loop_keeps_the_contract(tiny):
    model, _ = tiny

    class Interrupting:
        """The model, raising KeyboardInterrupt on its 4th decode call."""

        def __init__(self):
            self.calls = 0

        def __getattr__(self, name):
            return getattr(model, name)

        def __call__(self, x, cache=None):
            self.calls += 1
            if self.calls == 4:
                model(x, cache)  # half-done work is undone too
                raise KeyboardInterrupt
            return model(x, cache)

    ids = prompt_ids(20, seed=5)
    cache = model.make_cache()
    got = []
    with pytest.raises(KeyboardInterrupt):
        for t, _ in _loop(Interrupting(), ids, cache, 50):
            got.append(t)
    # calls: last prompt token, then feeding y0, y1, y2 (raises before y2 is handed out)
    assert len(got) == 2 and cache.offset == len(ids) + len(got) - 1
    rest = [t for t, _ in _loop(model, got[-1:], cache, 3)]
    assert got + rest == reference_tokens(model, ids, 5)


def test_nothing_yielded_leaves_the_cache_untouched(tiny):
    model, _ = tiny
    cache = model.make_cache()
    prefill(model, cache, prompt_ids(9))
    gen = _loop(model, prompt_ids(30, seed=6), cache, 5)
    gen.close()  # never started
    assert cache.offset == 9
    gen = _loop(model, prompt_ids(30, seed=6), cache, 5)
    next(gen)
    gen.close()
    assert cache.offset == 9 + 30


def test_generate_returns_text_and_stops_at_max_tokens(tiny):
    model, tok = tiny
    responses = list(stream_generate(model, tok, "Hello! How are you", max_tokens=7, **GREEDY))
    assert len(responses) == 7 and responses[-1].finish_reason == "length"
    assert all(r.finish_reason is None for r in responses[:-1])
    text = generate(model, tok, "Hello! How are you", max_tokens=7, **GREEDY)
    assert text == "".join(r.text for r in responses)
    last = responses[-1]
    assert last.prompt_tokens == len(tok.encode("Hello! How are you"))
    assert last.generation_tokens == 7 and last.prompt_tps > 0 and last.generation_tps > 0
    assert last.peak_memory > 0 and last.logprobs.shape == (model.config.vocab_size,)


def test_chat_messages_and_tools_go_through_the_template(tiny):
    model, tok = tiny
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    tools = [{"type": "function", "function": {"name": "now", "parameters": {}}}]
    text = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                   tokenize=False)
    assert "<tools>" in text and text.endswith("<|im_start|>assistant\n")
    ids = tok.encode(text, add_special_tokens=False)
    assert greedy_tokens(model, tok, messages, 5, tools=tools) == greedy_tokens(model, tok, ids, 5)


def test_seeded_sampling_is_reproducible(tiny):
    model, tok = tiny
    run = lambda: generate(model, tok, "The quick", max_tokens=12, seed=7, mtp=False,  # noqa
                           temperature=1.0, top_p=1.0, top_k=0)
    assert run() == run()


def test_top_k_one_equals_greedy(tiny):
    model, tok = tiny
    ids = prompt_ids(25, seed=8)
    sampled = [r.token for r in stream_generate(model, tok, ids, max_tokens=15, top_k=1,
                                                temperature=0.9, top_p=1.0, seed=1, mtp=False)]
    assert sampled == greedy_tokens(model, tok, ids, 15)
