"""Streaming text: eos ids and stop strings end a reply, multi-byte characters are never
split across chunks, and bad input gets one clear ValueError before any work."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import mlx_qwen3next  # noqa: F401
import mlx.core as mx
from mlx_qwen3next import generate, load, stream_generate
from mlx_qwen3next.cache import HybridCache

GREEDY = dict(temperature=0.0, mtp=False)
TEXT = "Café 中文 😀 naïve. The quick brown fox"


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return load(tiny_checkpoint)


class Scripted:
    """A stand-in model that says `script` (one token per step) after a prompt of
    `prompt_len` tokens, whatever it is fed."""

    def __init__(self, script, prompt_len, vocab=512):
        self.script, self.prompt_len, self.vocab = list(script), prompt_len, vocab
        self.config = SimpleNamespace(vocab_size=vocab, max_position_embeddings=4096,
                                      rope_scaling=None)
        self.has_mtp = False

    def make_cache(self):
        return HybridCache([])

    def hidden(self, ids, cache):
        cache.advance(ids.shape[1])
        return mx.zeros((1, ids.shape[1], 1))

    def __call__(self, ids, cache):
        self.hidden(ids, cache)
        k = min(cache.offset - self.prompt_len, len(self.script) - 1)
        logits = np.full((1, ids.shape[1], self.vocab), -20.0, np.float32)
        logits[0, -1, self.script[k]] = 20.0
        return mx.array(logits)


def scripted_stream(tok, text, eos=True, **kw):
    script = tok.encode(text, add_special_tokens=False)
    if eos:
        script.append(tok.convert_tokens_to_ids("<|im_end|>"))
    prompt = [1, 2, 3]
    model = Scripted(script, len(prompt))
    return list(stream_generate(model, tok, prompt, **{**GREEDY, "max_tokens": 100, **kw}))


def test_multibyte_characters_are_never_split(tiny):
    _, tok = tiny
    ids = tok.encode(TEXT, add_special_tokens=False)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some tokens are partial bytes
    out = scripted_stream(tok, TEXT)
    assert all("\ufffd" not in r.text for r in out)
    assert "".join(r.text for r in out) == TEXT


def test_eos_ends_the_reply_and_is_not_in_the_text(tiny):
    _, tok = tiny
    out = scripted_stream(tok, TEXT)
    assert out[-1].finish_reason == "stop"
    assert out[-1].token == tok.convert_tokens_to_ids("<|im_end|>")
    assert len(out) == len(tok.encode(TEXT, add_special_tokens=False)) + 1


def test_every_eos_id_stops(tiny):
    _, tok = tiny
    assert len(tok.eos_token_ids) == 2  # <|im_end|> from config, <|endoftext|> from generation_config
    out = scripted_stream(tok, "Hello<|endoftext|> more text", eos=False)
    assert "".join(r.text for r in out) == "Hello" and out[-1].finish_reason == "stop"


@pytest.mark.parametrize("stop", ["quick", "e q", "x"])
def test_stop_strings_cut_the_text(tiny, stop):
    _, tok = tiny
    out = scripted_stream(tok, TEXT, stop=[stop, "never there"])
    text = "".join(r.text for r in out)
    assert text == TEXT[: TEXT.index(stop)] and out[-1].finish_reason == "stop"
    assert all(stop not in r.text for r in out)


def test_max_tokens_finishes_with_length(tiny):
    _, tok = tiny
    out = scripted_stream(tok, TEXT, max_tokens=4)
    assert len(out) == 4 and out[-1].finish_reason == "length"


def test_a_full_context_finishes_with_length(tiny):
    _, tok = tiny
    out = scripted_stream(tok, TEXT, max_tokens=None, max_context=8)
    # 3 prompt tokens + 6 generated (the last one never needs a position)
    assert len(out) == 6 and out[-1].finish_reason == "length"


@pytest.mark.parametrize("prompt, kw, message", [
    ("", {}, "prompt is empty"),
    ([], {}, "prompt is empty"),
    (b"\xff\xfeabc", {}, "not valid UTF-8"),
    ("abc\udcff", {}, "not valid Unicode"),
    ([1, 2, 512], {}, "token id 512 is outside the vocabulary"),
    ([1, "a"], {}, "token ids must be integers"),
    (3.5, {}, "prompt must be text"),
    ("Hello", dict(temperature=-1.0), "temperature must be >= 0"),
    ("Hello", dict(top_p=0.0), "top_p must be in (0, 1]"),
    ("Hello", dict(top_p=1.01), "top_p must be in (0, 1]"),
    ("Hello", dict(top_k=-1), "top_k must be >= 0"),
    ("Hello", dict(max_tokens=0), "max_tokens must be a positive integer"),
    ("Hello", dict(stop=[""]), "stop strings must be non-empty"),
    ("Hello", dict(prefill_step_size=0), "prefill_step_size must be a positive integer"),
    ("Hello", dict(draft_tokens=0), "draft_tokens must be a positive integer"),
    ("Hello world, how are you", dict(max_context=3), "fit in the context"),
    ("Hello", dict(kv_bits=3), "kv_bits must be 4 or 8"),
])
def test_bad_input_raises_one_clear_line_and_nothing_breaks(tiny, prompt, kw, message):
    model, tok = tiny
    before = generate(model, tok, "Hello", max_tokens=5, **GREEDY)
    with pytest.raises(ValueError) as err:
        stream_generate(model, tok, prompt, **{**GREEDY, **kw})  # raised at the call
    assert message in str(err.value) and "\n" not in str(err.value)
    assert generate(model, tok, "Hello", max_tokens=5, **GREEDY) == before


def test_prompt_longer_than_the_models_context(make_checkpoint):
    model, tok = load(make_checkpoint("short-ctx", max_position_embeddings=32))
    with pytest.raises(ValueError, match="prompt is 40 tokens but only 32 fit"):
        stream_generate(model, tok, list(range(40)), **GREEDY)
    text = generate(model, tok, list(range(20)), max_tokens=50, **GREEDY)
    out = list(stream_generate(model, tok, list(range(20)), max_tokens=50, **GREEDY))
    assert "".join(r.text for r in out) == text
    # 12 positions are left: 12 tokens fill them, and one more is sampled from the last
    assert (len(out), out[-1].finish_reason) == (13, "length") or (
        len(out) < 13 and out[-1].finish_reason == "stop")


def test_mtp_true_without_a_head_is_a_clear_error(make_checkpoint):
    model, tok = load(make_checkpoint("no-mtp", mtp=False))
    with pytest.raises(ValueError, match="no MTP head"):
        stream_generate(model, tok, "Hello", mtp=True)
    out = list(stream_generate(model, tok, "Hello", max_tokens=3, temperature=0.0))
    assert not any(r.from_draft for r in out)  # plain decoding, the model still usable
    assert len(out) == 3 or out[-1].finish_reason == "stop"
