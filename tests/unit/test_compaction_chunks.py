"""How compaction groups an hour's series into transactions (saver/compaction.py chunks)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from saver.compaction import chunks


def test_series_are_grouped_in_order_up_to_the_bound() -> None:
    counts = [(1, 40), (2, 50), (3, 20), (4, 100), (5, 250), (6, 1)]
    assert chunks(counts, 100) == [([1, 2], 90), ([3], 20), ([4], 100), ([5], 250), ([6], 1)]
    assert chunks([], 100) == []


@given(st.lists(st.integers(1, 1_000), max_size=60), st.integers(1, 500))
def test_every_series_once_and_no_chunk_over_the_bound_but_a_lone_one(sizes: list[int], most: int) -> None:
    counts = list(enumerate(sizes))
    found = chunks(counts, most)
    assert [s for ids, _ in found for s in ids] == [s for s, _ in counts]
    for ids, readings in found:
        assert readings == sum(sizes[s] for s in ids)
        assert readings <= most or len(ids) == 1
    # Greedy: a chunk ends only where the next series would not fit.
    for (_, readings), (following, _) in itertools.pairwise(found):
        assert readings + sizes[following[0]] > most
