"""Readings encoded straight into MetricBatch bytes (receiver/encoded.py): the same readings protobuf
would write, checked as every reading is."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrics.v1 import metric_pb2
from receiver.encoded import Encoder, ReadingProblem, Readings
from runtime.validation import ArrivalClock, Limits

LIMITS = Limits(max_batch_readings=10_000, max_future_skew_s=300)
NOW_US = time.time_ns() // 1000


def decoded(readings: Readings, most: int = 10_000) -> list[tuple[str, metric_pb2.MetricBatch, int]]:
    return [(s, metric_pb2.MetricBatch.FromString(b), n) for s, b, n in readings.batches(most)]


@given(
    value=st.floats(min_value=-1e150, max_value=1e150),
    time_us=st.integers(min_value=946_684_800_000_000, max_value=NOW_US),
    labels=st.dictionaries(st.text(min_size=1, max_size=64).filter(lambda t: "\x00" not in t),
                           st.text(max_size=256).filter(lambda t: "\x00" not in t), max_size=16),
)  # fmt: skip
def test_a_reading_is_the_metric_protobuf_would_write(
    value: float, time_us: int, labels: dict[str, str]
) -> None:
    encoder = Encoder(LIMITS, ArrivalClock())
    series = encoder.series("plant-7-1", "temperature", labels)
    readings = Readings()
    readings.add(series.sensor_id, encoder.readings(series, [(value, time_us)], NOW_US))
    expected = metric_pb2.Metric(sensor_id="plant-7-1", metric_type="temperature", value=value, labels=labels)
    expected.reading_time.FromMicroseconds(time_us)
    [(sensor, batch, count)] = decoded(readings)
    assert (sensor, list(batch.metrics), count) == ("plant-7-1", [expected], 1)


def test_readings_without_a_time_get_distinct_arrival_times() -> None:
    encoder = Encoder(LIMITS, ArrivalClock())
    series = encoder.series("s", "m", {})
    found = encoder.readings(series, [(1.0, None), (2.0, None)], encoder.latest_us())
    first, second = (metric_pb2.Metric.FromString(b[2:]) for b in found)
    assert (
        first.reading_time.ToMicroseconds() < second.reading_time.ToMicroseconds() <= time.time_ns() // 1000
    )


def test_a_series_or_reading_that_cannot_be_written_says_why_as_the_checks_of_every_reading_do() -> None:
    encoder = Encoder(LIMITS, ArrivalClock())
    with pytest.raises(ReadingProblem, match="metric_type: 'Bad:Name' is not a metric type"):
        encoder.series("s", "Bad:Name", {})
    with pytest.raises(ReadingProblem, match="sensor_id: "):
        encoder.series("a sensor", "m", {})
    series = encoder.series("s", "m", {"site": "a"})
    latest = encoder.latest_us()
    with pytest.raises(ReadingProblem, match="value: must be a finite number, got nan"):
        encoder.readings(series, [(1.0, NOW_US), (math.nan, NOW_US)], latest)
    with pytest.raises(ReadingProblem, match=r"value: must be within ±1e\+150"):
        encoder.readings(series, [(1e151, NOW_US)], latest)
    with pytest.raises(ReadingProblem, match="reading_time: "):
        encoder.readings(series, [(1.0, 0)], latest)
    with pytest.raises(ReadingProblem, match="reading_time: "):
        encoder.readings(series, [(1.0, latest + 1_000_000)], latest)


def test_a_sensor_s_readings_are_batched_in_order_at_most_so_many_a_batch() -> None:
    encoder = Encoder(LIMITS, ArrivalClock())
    readings = Readings()
    a, b = encoder.series("a", "m", {}), encoder.series("b", "m", {})
    readings.add("a", encoder.readings(a, [(float(i), NOW_US - i) for i in range(5)], NOW_US))
    readings.add("b", encoder.readings(b, [(9.0, NOW_US)], NOW_US))
    readings.add("a", encoder.readings(a, [(5.0, NOW_US)], NOW_US))
    got = [(s, [m.value for m in batch.metrics], n) for s, batch, n in decoded(readings, most=4)]
    assert got == [("a", [0.0, 1.0, 2.0, 3.0], 4), ("a", [4.0, 5.0], 2), ("b", [9.0], 1)]
    assert readings.count == 7
