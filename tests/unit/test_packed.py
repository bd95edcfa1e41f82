"""Packed readings (runtime/packed.py): every reading comes back bit for bit, merging keeps the first
of a time, and the sizes are what the format is for."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime import packed

# What the receiver lets through: times from 2000 on, values within ±1e150, no NaN or infinity.
TIMES = st.integers(946_684_800_000_000, 4_102_444_800_000_000)
VALUES = st.one_of(
    st.floats(-1e150, 1e150, allow_nan=False),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1e150, -1e150, 21.5, -0.001, 0.1 + 0.2]),
    st.integers(-(10**6), 10**6).map(lambda i: i / 100),  # two decimals, the common case
)


def same(a: packed.Readings, b: packed.Readings) -> bool:
    return (
        a.times.tolist() == b.times.tolist()
        and a.values.view(np.uint64).tolist() == b.values.view(np.uint64).tolist()
        and a.attributes.tolist() == b.attributes.tolist()
    )


@st.composite
def series(draw: st.DrawFn, values: st.SearchStrategy[float] = VALUES) -> packed.Readings:
    times = sorted(draw(st.sets(TIMES, min_size=1, max_size=300)))
    return packed.readings(
        times,
        [draw(values) for _ in times],
        [draw(st.sampled_from([1, 1, 1, 7, 2**31 - 1])) for _ in times],
    )


@given(series())
def test_every_reading_comes_back_bit_for_bit(found: packed.Readings) -> None:
    assert same(packed.unpack(packed.pack(found)), found)


@given(series(st.integers(-(10**9), 10**9).map(lambda i: i / 1000)))
def test_decimal_values_come_back_bit_for_bit(found: packed.Readings) -> None:
    assert same(packed.unpack(packed.pack(found)), found)


def test_negative_zero_among_decimals_keeps_its_sign() -> None:
    found = packed.readings([1, 2, 3], [21.5, -0.0, 0.0], [1, 1, 1])
    blob = packed.pack(found)
    assert blob[1] == 1, "packed as integers of one decimal"
    back = packed.unpack(blob)
    assert same(back, found) and np.signbit(back.values[1]) and not np.signbit(back.values[2])


@given(series(), series())
def test_a_merge_keeps_the_first_reading_of_a_time(kept: packed.Readings, more: packed.Readings) -> None:
    merged = packed.merge(kept, more)
    expected = {t: (v, a) for t, v, a in zip(*more, strict=True)}
    expected.update({t: (v, a) for t, v, a in zip(*kept, strict=True)})
    assert merged.times.tolist() == sorted(expected)
    assert [(v, a) for v, a in zip(merged.values.tolist(), merged.attributes.tolist(), strict=True)] == [
        expected[t] for t in sorted(expected)
    ]


def test_a_merge_of_unsorted_readings_with_repeats_keeps_the_first_given() -> None:
    kept = packed.readings([10, 30], [1.0, 3.0], [1, 1])
    more = packed.readings([40, 20, 30, 20], [4.0, 2.0, 9.0, 8.0], [2, 2, 2, 3])
    merged = packed.merge(kept, more)
    assert merged.times.tolist() == [10, 20, 30, 40]
    assert merged.values.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert merged.attributes.tolist() == [1, 2, 1, 2]


def test_an_hour_of_a_two_decimal_sensor_takes_a_few_bytes_a_reading() -> None:
    rng = np.random.default_rng(7)
    times = 1_767_225_600_000_000 + np.arange(3600, dtype=np.int64) * 1_000_000 + rng.integers(0, 2000, 3600)
    values = np.round(20 + np.cumsum(rng.normal(0, 0.05, 3600)), 2)
    blob = packed.pack(packed.Readings(times, values, np.full(3600, 3, np.int64)))
    assert len(blob) / 3600 < 3.0, len(blob)
    assert same(packed.unpack(blob), packed.Readings(times, values, np.full(3600, 3, np.int64)))


@pytest.mark.parametrize(
    ("times", "why"),
    [([], "not empty"), ([2, 1], "strictly increasing"), ([1, 1], "strictly increasing")],
)
def test_what_cannot_be_packed_is_refused_by_name(times: list[int], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        packed.pack(packed.readings(times, [1.0] * len(times), [1] * len(times)))


def test_an_unknown_format_is_refused() -> None:
    blob = bytearray(packed.pack(packed.readings([1], [1.0], [1])))
    blob[0] = 9
    with pytest.raises(ValueError, match="format 9"):
        packed.unpack(bytes(blob))
