"""The tiny demo model's byte-level BPE tokenizer, trained on the synthetic corpus.

Built and saved by the package's test-tokenizer functions (testing/tokenizer_files.py:
the ChatML special tokens, the tool tags, the chat template), so the package's loader,
transformers and mlx-lm load it. Two pre-tokenizer rules before the byte-level split:
digits one per token, each with the space before it if there is one (so "1 + 7 = 8" is
five tokens, and a DeltaNet layer's 4-token conv sees a whole sum), and a space before a capital
letter a token of its own, so a name is cut into the same tokens after a space
("in Lyon?") as after a quote (`{"city": "Lyon"}`) and copying it is a plain copy.
Training is deterministic for a given corpus.

    python -m training.tokenizer --corpus training/out/corpus.jsonl --out training/out/tok
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from mlx_qwen3next.testing.tokenizer_files import ADDED_TOKENS, save_tokenizer, train_bpe

VOCAB_SIZE = 1024  # BPE tokens + the added tokens
_ADDED = re.compile("|".join(re.escape(t) for t in ADDED_TOKENS))


def train_tokenizer(texts, vocab_size: int = VOCAB_SIZE):
    """A `tokenizers.Tokenizer` trained on `texts`; the added tokens are cut out of the
    training text (no merge spans them) and come after the BPE vocabulary."""
    from tokenizers import Regex, pre_tokenizers

    rules = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(" (?=[A-Z])"), behavior="isolated"),
        pre_tokenizers.Split(Regex(" ?[0-9]"), behavior="isolated"),
    ])
    pieces = (p for t in texts for p in _ADDED.split(t) if p)
    return train_bpe(pieces, vocab_size - len(ADDED_TOKENS), rules)


def load_tokenizer(path: str | Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(path) / "tokenizer.json"))


def main():
    from .corpus import read_corpus

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="training/out/corpus.jsonl")
    ap.add_argument("--out", default="training/out/tokenizer")
    ap.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    args = ap.parse_args()
    tok = train_tokenizer([c["text"] for c in read_corpus(args.corpus)], args.vocab_size)
    ids = save_tokenizer(tok, args.out)
    print(f"vocab {tok.get_vocab_size()}, added ids {ids}, saved to {args.out}")


if __name__ == "__main__":
    main()
