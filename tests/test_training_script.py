"""training/, the tiny model's script: the synthetic corpus answers right and keeps its
held-out items out, the tokenizer splits digits and names as the tasks need, and a short
run is reproducible from its seed."""

from __future__ import annotations

import re

import pytest

from training import corpus
from training.data import check_masks, encode_corpus
from training.tokenizer import train_tokenizer

STEP = re.compile(r"(?<![\d-] )\b(\d+(?: - 1)?) ([+-]) (\d+(?: \+ 1)?) = (-?\d+)")


def test_every_arithmetic_reply_is_right_step_by_step():
    for a, op, b in corpus.arithmetic_triples():
        reply = corpus.arithmetic_reply(a, op, b)
        assert corpus.final_number(reply) == corpus.result(a, op, b), reply
        steps = STEP.findall(reply)
        assert len(steps) == (1 if a < 10 and b < 10 else 3), reply
        for x, o, y, r in steps:  # "x - 1 - y" is a borrow, "x + y + 1" a carry
            assert eval(f"{x} {o} {y}") == int(r), (reply, x, o, y, r)


def test_held_out_items_never_reach_training():
    convs = corpus.build_corpus(4000, seed=1)
    text = "\n".join(m["content"] or json_of(m) for c in convs for m in c["messages"])
    for a, op, b in list(corpus.held_out_triples())[:300]:
        assert f"What is {a} {op} {b}?" not in text
    words = set(re.findall(r"[A-Z][a-z]+(?: [A-Z][a-z]+)*", text))
    assert not words & (set(corpus.HELD_OUT_CITIES) | set(corpus.held_out_generated_names()))
    assert {c["task"] for c in convs} == set(corpus.MIX)


def json_of(message) -> str:
    return str(message.get("tool_calls"))


@pytest.fixture(scope="module")
def small():
    convs = corpus.build_corpus(300, seed=0)
    for c in convs:
        c["text"], c["spans"] = corpus.assistant_spans(c["messages"], c["tools"])
    return convs, train_tokenizer([c["text"] for c in convs], 512)


def test_tokenizer_splits_digits_and_names(small):
    _, tok = small
    pieces = tok.encode("What is 81 + 47? in Lyon").tokens
    assert [p for p in pieces if p.strip("Ġ").isdigit()] == ["Ġ8", "1", "Ġ4", "7"]
    name = tok.encode("Lyon").tokens  # the same pieces after a space and after a quote
    for text in ("What's the weather in Lyon?", '{"city": "Lyon"}'):
        got = tok.encode(text).tokens
        assert any(got[i:i + len(name)] == name for i in range(len(got))), (text, got)
    assert tok.token_to_id("<tool_call>") is not None and tok.get_vocab_size() == 512


def test_loss_masks_are_exactly_the_replies(small):
    convs, tok = small
    check_masks(tok, convs, encode_corpus(tok, convs), n=len(convs))


def test_a_short_run_is_reproducible(tmp_path):
    from training.train_tiny import parse_args, train

    def run():
        args = parse_args(["--out", str(tmp_path), "--corpus-size", "200", "--vocab-size", "512",
                           "--hidden", "32", "--experts", "4", "--moe-intermediate", "16",
                           "--shared-intermediate", "32", "--steps", "3", "--copy-steps", "1",
                           "--log-every", "1",
                           "--eval-every", "0", "--no-export", "--tokens-per-batch", "512"])
        return train(args)["final_loss"]

    first, second = run(), run()
    assert first["loss"] == second["loss"] and first["step"] == 3
    assert first["loss"] > 0


def test_the_copy_phase_is_repeat_rows_only(small):
    from training.train_tiny import copy_phase, parse_args

    _, tok = small
    pad = tok.token_to_id("<|endoftext|>")
    args = parse_args(["--copy-steps", "3", "--tokens-per-batch", "256"])
    batches = list(copy_phase(args, tok, pad))
    assert len(batches) == 3
    for ids, mask in batches:
        for row, m in zip(ids, mask):
            text = tok.decode([int(t) for t in row if t != pad], skip_special_tokens=False)
            assert "Repeat after me: " in text and m.any(), text
    assert list(copy_phase(parse_args(["--copy-steps", "0"]), tok, pad)) == []


def test_the_loss_log_averages_only_finite_steps():
    """A skipped non-finite batch is counted, not averaged into the curve as NaN."""
    import math

    from training.train_tiny import window_mean

    nan = float("nan")
    w, skipped = window_mean([[1.0, 2.0], [nan, 5.0], [3.0, 4.0]])
    assert skipped == 1 and list(w) == [2.0, 3.0]
    w, skipped = window_mean([[nan, 1.0]])
    assert skipped == 1 and math.isnan(w[0])
