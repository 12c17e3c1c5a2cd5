"""Token ids, loss masks and length-bucketed batches for training the tiny model.

Each conversation is one row: its rendered text tokenised whole, with a mask that
is True on the tokens of the assistant replies (`<|im_end|>` included) and False on
everything else (system, user, tool turns, the template's headers). Rows are
right-padded to a bucket length, so a causal model never sees the padding. A batch
holds rows of one bucket only, as many as fit a token budget: short arithmetic rows
do not pay for the long tool-calling ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Encoded:
    ids: list  # np.int32 arrays
    masks: list  # np.bool_ arrays
    tasks: list


def encode_corpus(tok, corpus: list[dict]) -> Encoded:
    """Tokenise each conversation's text; mask = tokens inside an assistant span."""
    encs = tok.encode_batch([c["text"] for c in corpus])
    ids, masks = [], []
    for conv, enc in zip(corpus, encs):
        off = np.array(enc.offsets, dtype=np.int64).reshape(-1, 2)
        mask = np.zeros(len(enc.ids), dtype=bool)
        for s, e in conv["spans"]:
            mask |= (off[:, 0] >= s) & (off[:, 1] <= e)
        ids.append(np.array(enc.ids, dtype=np.int32))
        masks.append(mask)
    return Encoded(ids, masks, [c["task"] for c in corpus])


def check_masks(tok, corpus: list[dict], enc: Encoded, n: int = 200):
    """The masked tokens decode to exactly the assistant replies (first n rows)."""
    for conv, ids, mask in list(zip(corpus, enc.ids, enc.masks))[:n]:
        want = "".join(conv["text"][s:e] for s, e in conv["spans"])
        got = tok.decode(ids[mask].tolist(), skip_special_tokens=False)
        assert got == want, (got, want)


def buckets_for(lengths, short: tuple = (32, 40, 48, 64, 80, 320, 400, 480)) -> tuple:
    """Bucket lengths: fixed ones fitted to the corpus (arithmetic, repeat, identity and
    tool-less rows up to 80; tool-calling rows of one to four rounds above), and the
    longest row rounded up to 8."""
    longest = int(max(lengths))
    top = -(-longest // 8) * 8
    return tuple(b for b in short if b < top) + (top,)


class Batches:
    """An endless, seeded stream of (ids [R, L], mask [R, L]) numpy batches.

    Rows go to the smallest bucket that holds them; a batch of bucket L has
    tokens_per_batch // L rows. Each epoch reshuffles (numpy Generator(seed))."""

    def __init__(self, enc: Encoded, tokens_per_batch: int, pad_id: int, seed: int,
                 buckets: tuple | None = None):
        self.enc, self.pad_id = enc, pad_id
        lengths = np.array([len(x) for x in enc.ids])
        self.buckets = buckets or buckets_for(lengths)
        self.bucket_of = np.searchsorted(np.array(self.buckets), lengths)
        self.rows = {L: max(1, tokens_per_batch // L) for L in self.buckets}
        self.rng = np.random.default_rng(seed)
        self.epoch = 0

    def _epoch(self):
        order = self.rng.permutation(len(self.enc.ids))
        batches = []
        for b, L in enumerate(self.buckets):
            rows = order[self.bucket_of[order] == b]
            R = self.rows[L]
            batches += [(L, rows[i:i + R]) for i in range(0, len(rows) - R + 1, R)]
        for i in self.rng.permutation(len(batches)):
            yield batches[i]
        self.epoch += 1

    def __iter__(self):
        while True:
            for L, rows in self._epoch():
                yield self.make(L, rows)

    def make(self, L: int, rows) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(rows), L), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(rows), L), dtype=bool)
        for r, i in enumerate(rows):
            x = self.enc.ids[i]
            ids[r, : len(x)] = x
            mask[r, : len(x)] = self.enc.masks[i]
        return ids, mask

    def shapes(self) -> list[tuple[int, int]]:
        return [(self.rows[L], L) for L in self.buckets]
