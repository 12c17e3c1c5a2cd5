"""Which layers each rank holds (distributed/split.py) and which tensors (stage.py)."""

from __future__ import annotations

import pytest

from mlx_qwen3next.distributed.split import parse_split, ranges
from mlx_qwen3next.distributed.stage import Stage


def counts(rs):
    return [len(r) for r in rs]


def test_even_and_given_counts():
    assert ranges("even", 48, 2) == [range(0, 24), range(24, 48)]
    assert counts(ranges("even", 7, 3)) == [3, 2, 2]
    assert ranges(parse_split("20,28"), 48, 2) == [range(0, 20), range(20, 48)]


def test_by_memory_follows_each_rank_s_share():
    layer = [100] * 48
    assert counts(ranges(None, 48, 2, layer, 0, 0, [1, 1])) == [24, 24]
    assert counts(ranges(None, 48, 2, layer, 0, 0, [1, 3])) == [12, 36]
    # the first rank's embedding and the last's lm_head count towards their shares
    assert counts(ranges(None, 48, 2, layer, 800, 0, [1, 1])) == [20, 28]
    assert counts(ranges(None, 48, 3, layer, 0, 0, [16, 36, 36])) == [9, 19, 20]
    # every rank keeps at least one layer, however little memory it has
    assert counts(ranges(None, 4, 2, [100] * 4, 0, 0, [1, 1000])) == [1, 3]


@pytest.mark.parametrize("text, error", [
    ("3,9", "--split 3,9: the counts add up to 12, the model has 8 layers"),
    ("4,2,2", "--split 4,2,2: 3 counts for 2 ranks"),
    ("8,0", "--split 8,0: every rank needs at least one layer"),
    ("half", "--split half: give 'even' or layer counts per rank, like 24,24"),
])
def test_bad_splits_are_one_line(text, error):
    with pytest.raises(ValueError) as e:
        ranges(parse_split(text), 8, 2)
    assert str(e.value) == error


def test_too_many_ranks():
    with pytest.raises(ValueError, match="the model has 4 layers, too few for 5 ranks"):
        ranges("even", 4, 5)


def test_each_tensor_has_one_home():
    first, last = Stage(0, 2, range(0, 24)), Stage(1, 2, range(24, 48))
    for key in ("model.embed_tokens.weight", "model.layers.3.mlp.gate.weight"):
        assert first.owns(key) and not last.owns(key)
    for key in ("model.layers.24.input_layernorm.weight", "model.norm.weight",
                "lm_head.weight", "mtp.fc.weight"):
        assert last.owns(key) and not first.owns(key)
    assert last.owns("model.embed_tokens.weight", tied=True)  # a tied lm_head needs it
