"""Splitting a time range into raw edges and whole minutes (assessor/aggregates.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from assessor.aggregates import MINUTE_US, Aggregate, split


def test_range_within_a_minute_is_all_raw() -> None:
    assert split(10, 20) == (10, 20, 20, 20)


def test_aligned_range_is_all_minutes() -> None:
    assert split(0, 3 * MINUTE_US) == (0, 0, 3 * MINUTE_US, 3 * MINUTE_US)


@given(st.integers(0, 10**15), st.integers(1, 10**12))
def test_parts_cover_the_range_exactly(start: int, length: int) -> None:
    end = start + length
    a, b, c, d = split(start, end)
    assert a == start and d == end
    assert start <= b <= c <= end
    if b < c:
        assert b % MINUTE_US == 0 and c % MINUTE_US == 0
        assert b - start < MINUTE_US and end - c < MINUTE_US


def test_population_stddev_and_mean() -> None:
    values = [10.0, 100.0, 97.0, 99.0, 10.0, 100.0, 107.0, 98.0]
    agg = Aggregate(len(values), sum(values), sum(v * v for v in values), min(values), max(values))
    assert agg.mean == 77.625
    mean = sum(values) / len(values)
    assert abs(agg.stddev - (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5) < 1e-9  # type: ignore[operator]
    assert Aggregate(0, 0.0, 0.0, None, None).mean is None
