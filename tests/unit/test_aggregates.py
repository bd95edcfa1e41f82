"""Splitting a time range into raw edges, whole minutes and whole hours (assessor/aggregates.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from assessor.aggregates import HOUR_US, MINUTE_US, Aggregate, Split, split
from assessor.stats import bin_value, histogram_percentiles


def test_range_within_a_minute_is_all_raw() -> None:
    assert split(10, 20) == Split(10, 20, 20, 20, 20, 20)


def test_range_within_an_hour_has_no_hours() -> None:
    start, end = 30_000_000, 3 * MINUTE_US + 5
    assert split(start, end) == Split(start, MINUTE_US, 3 * MINUTE_US, 3 * MINUTE_US, 3 * MINUTE_US, end)


def test_aligned_range_is_all_hours() -> None:
    assert split(0, 3 * HOUR_US) == Split(0, 0, 0, 3 * HOUR_US, 3 * HOUR_US, 3 * HOUR_US)


@given(st.integers(0, 10**15), st.integers(1, 10**12))
def test_parts_cover_the_range_exactly(start: int, length: int) -> None:
    end = start + length
    s = split(start, end)
    assert s.start == start and s.end == end
    assert start <= s.m1 <= s.h1 <= s.h2 <= s.m2 <= end
    if s.m1 < s.m2:
        assert s.m1 % MINUTE_US == 0 and s.m2 % MINUTE_US == 0
        assert s.m1 - start < MINUTE_US and end - s.m2 < MINUTE_US
    if s.h1 < s.h2:
        assert s.h1 % HOUR_US == 0 and s.h2 % HOUR_US == 0
        assert s.h1 - s.m1 < HOUR_US and s.m2 - s.h2 < HOUR_US


def test_population_stddev_and_mean() -> None:
    values = [10.0, 100.0, 97.0, 99.0, 10.0, 100.0, 107.0, 98.0]
    agg = Aggregate(len(values), sum(values), sum(v * v for v in values), min(values), max(values))
    assert agg.mean == 77.625
    mean = sum(values) / len(values)
    assert abs(agg.stddev - (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5) < 1e-9  # type: ignore[operator]
    assert Aggregate(0, 0.0, 0.0, None, None).mean is None


def _bin(v: float) -> int:
    """value_bin of saver/migrations/0002, in Python."""
    import math  # noqa: PLC0415

    if abs(v) < 1e-300:
        return 0
    k = max(-9999, min(9999, math.ceil(math.log(abs(v)) / math.log(1.01 / 0.99))))
    return int(math.copysign(10_000 + k, v))


@given(st.floats(min_value=1e-6, max_value=1e12) | st.floats(min_value=-1e12, max_value=-1e-6))
def test_a_bin_stands_for_its_values_within_one_percent(value: float) -> None:
    assert abs(bin_value(_bin(value)) - value) <= 0.01 * abs(value)


@given(
    st.lists(
        st.floats(min_value=-1e6, max_value=1e6).filter(lambda v: abs(v) > 1e-3), min_size=1, max_size=300
    )
)
def test_histogram_percentiles_are_within_one_percent_of_nearest_rank(values: list[float]) -> None:
    import math  # noqa: PLC0415

    bins: dict[int, int] = {}
    for v in values:
        bins[_bin(v)] = bins.get(_bin(v), 0) + 1
    got = histogram_percentiles(sorted(bins.items()), min(values), max(values))
    ordered = sorted(values)
    for estimate, p in zip(got, (0.5, 0.95, 0.99), strict=True):
        exact = ordered[max(1, math.ceil(p * len(values))) - 1]
        assert abs(estimate - exact) <= 0.01 * abs(exact) + 1e-12
