"""Which contiguous range of layers each rank holds: evenly, by counts, or by memory.

`--split even` gives ranks equal counts (the first ranks one more when it does not
divide); `--split 12,36` gives counts per rank; without it each rank's share of the
weights (its layers, plus the embedding on the first and the final norm, lm_head and
MTP head on the last) follows its available memory.
"""

from __future__ import annotations

from typing import Optional, Sequence


def parse_split(text: Optional[str]) -> Optional[object]:
    """None (by memory), "even", or a list of positive layer counts."""
    if text is None or text.strip() in ("", "memory"):
        return None
    if text.strip() == "even":
        return "even"
    try:
        counts = [int(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(f"--split {text}: give 'even' or layer counts per rank, "
                         "like 24,24") from None
    if any(c < 1 for c in counts):
        raise ValueError(f"--split {text}: every rank needs at least one layer")
    return counts


def ranges(split, n_layers: int, size: int, layer_bytes: Sequence[int] = (),
           first_bytes: int = 0, last_bytes: int = 0,
           memory: Sequence[int] = ()) -> list[range]:
    """The layer range of each of `size` ranks."""
    if n_layers < size:
        raise ValueError(f"the model has {n_layers} layers, too few for {size} ranks")
    if split == "even":
        counts = [n_layers // size + (r < n_layers % size) for r in range(size)]
    elif split is None:
        counts = by_memory(layer_bytes, first_bytes, last_bytes, memory)
    else:
        counts = list(split)
        text = ",".join(map(str, counts))
        if len(counts) != size:
            raise ValueError(f"--split {text}: {len(counts)} counts for {size} ranks")
        if sum(counts) != n_layers:
            raise ValueError(f"--split {text}: the counts add up to {sum(counts)}, "
                             f"the model has {n_layers} layers")
    starts = [sum(counts[:r]) for r in range(size)]
    return [range(s, s + c) for s, c in zip(starts, counts)]


def by_memory(layer_bytes: Sequence[int], first_bytes: int, last_bytes: int,
              memory: Sequence[int]) -> list[int]:
    """Layer counts whose bytes (with the first and last ranks' extras) follow `memory`:
    each cut is the layer boundary nearest its share of the running total."""
    size, n = len(memory), len(layer_bytes)
    shares = list(memory) if sum(memory) > 0 else [1] * size
    total = first_bytes + sum(layer_bytes) + last_bytes
    before = [first_bytes]  # bytes up to each layer boundary
    for b in layer_bytes:
        before.append(before[-1] + b)
    cuts = [0]
    for r in range(size - 1):
        target = total * sum(shares[: r + 1]) / sum(shares)
        allowed = range(cuts[-1] + 1, n - (size - 1 - r) + 1)
        cuts.append(min(allowed, key=lambda c: abs(before[c] - target)))
    cuts.append(n)
    return [b - a for a, b in zip(cuts, cuts[1:])]
