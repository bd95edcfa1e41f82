"""Validation of readings: every problem named by its field, nothing accepted from a bad batch."""

from __future__ import annotations

import itertools
import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrics.v1 import metric_pb2
from runtime.errors import InvalidArgument
from runtime.validation import ArrivalClock, Limits, check_batch, check_metric

LIMITS = Limits(max_batch_readings=100, max_future_skew_s=300)


def metric(**fields: object) -> metric_pb2.Metric:
    values: dict[str, object] = {"sensor_id": "s-1", "metric_type": "temperature", "value": 20.0}
    values.update(fields)
    return metric_pb2.Metric(**values)  # type: ignore[arg-type]


def violations(metrics: list[metric_pb2.Metric], limits: Limits = LIMITS) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as error:
        check_batch(metrics, limits, ArrivalClock())
    return [(v.field, v.description) for v in error.value.violations]


def test_valid_batch_gets_arrival_times_in_order() -> None:
    batch = [metric(), metric(value=21.0), metric(value=22.0)]
    before = time.time_ns()
    check_batch(batch, LIMITS, ArrivalClock())
    times = [m.reading_time.ToNanoseconds() for m in batch]
    assert times == sorted(set(times)), "distinct and increasing"
    assert times[0] >= before // 1000 * 1000
    assert all(t % 1000 == 0 for t in times), "microsecond resolution, as stored"


def test_given_times_are_kept() -> None:
    m = metric()
    m.reading_time.FromSeconds(1_700_000_000)
    check_batch([m], LIMITS, ArrivalClock())
    assert m.reading_time.seconds == 1_700_000_000


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"sensor_id": ""}, "metrics[0].sensor_id", "is required"),
        ({"sensor_id": "x" * 129}, "metrics[0].sensor_id", "129 characters, more than 128"),
        ({"sensor_id": "a b"}, "metrics[0].sensor_id", "has characters other than"),
        ({"sensor_id": "ünï"}, "metrics[0].sensor_id", "has characters other than"),
        ({"sensor_id": "x'; DROP TABLE readings;--"}, "metrics[0].sensor_id", "has characters other than"),
        ({"metric_type": ""}, "metrics[0].metric_type", "is required"),
        ({"metric_type": "Temp"}, "metrics[0].metric_type", "is not a metric type"),
        ({"value": math.nan}, "metrics[0].value", "must be a finite number, got nan"),
        ({"value": math.inf}, "metrics[0].value", "must be a finite number, got inf"),
        ({"value": -math.inf}, "metrics[0].value", "must be a finite number, got -inf"),
        ({"unit": "u" * 33}, "metrics[0].unit", "more than 32"),
        ({"labels": {f"k{i}": "v" for i in range(17)}}, "metrics[0].labels", "17 entries"),
        ({"labels": {"k": "v" * 257}}, "metrics[0].labels['k']", "more than 256"),
    ],
)
def test_each_problem_names_its_field(fields: dict[str, object], field: str, text: str) -> None:
    [(got_field, got_text)] = violations([metric(**fields)])
    assert got_field == field
    assert text in got_text


def test_future_time_is_rejected_beyond_the_skew() -> None:
    m = metric()
    m.reading_time.FromSeconds(int(time.time()) + 3600)
    [(field, text)] = violations([m])
    assert field == "metrics[0].reading_time"
    assert "in the future" in text
    ok = metric()
    ok.reading_time.FromSeconds(int(time.time()) + 60)
    check_batch([ok], LIMITS, ArrivalClock())


def test_time_before_2000_and_bad_nanos_are_rejected() -> None:
    early, bad = metric(), metric()
    early.reading_time.seconds = 946_684_799  # 1999-12-31T23:59:59Z
    bad.reading_time.seconds = 1_700_000_000
    bad.reading_time.nanos = 1_000_000_000
    assert [f for f, _ in violations([early, bad])] == ["metrics[0].reading_time", "metrics[1].reading_time"]


def test_empty_and_oversized_batches() -> None:
    assert violations([]) == [("metrics", "at least one reading is required")]
    assert violations([metric()] * 101) == [("metrics", "101 readings, more than the limit of 100")]


def test_unknown_type_when_types_are_configured() -> None:
    limits = Limits(100, 300, frozenset({"temperature", "humidity"}))
    [(field, text)] = violations([metric(metric_type="pressure")], limits)
    assert field == "metrics[0].metric_type"
    assert text == "unknown metric type 'pressure'; known types: humidity, temperature"


def test_every_bad_reading_is_reported_and_nothing_is_changed() -> None:
    batch = [metric(), metric(value=math.nan), metric(sensor_id="")]
    assert [f for f, _ in violations(batch)] == ["metrics[1].value", "metrics[2].sensor_id"]
    assert not any(m.HasField("reading_time") for m in batch), "a rejected batch is left as it came"


ids = st.sampled_from(["s-1", "s-2", "", "a b", "x" * 129, "ünï", "ok:id.9_-"])
types_ = st.sampled_from(["temperature", "humidity", "", "Temp", "t" * 65])
values = st.floats(allow_nan=True, allow_infinity=True)
times = st.one_of(st.none(), st.tuples(st.integers(-(2**40), 2**40), st.integers(-5, 2 * 10**9)))
units = st.sampled_from(["", "celsius", "u" * 33])
labels = st.sampled_from([{}, {"site": "a"}, {"k": "v" * 257}, {"": "x"}, {f"k{i}": "v" for i in range(17)}])


@st.composite
def readings(draw: st.DrawFn) -> metric_pb2.Metric:
    m = metric_pb2.Metric(sensor_id=draw(ids), metric_type=draw(types_), value=draw(values), unit=draw(units))
    m.labels.update(draw(labels))
    when = draw(times)
    if when is not None:
        m.reading_time.seconds, m.reading_time.nanos = when[0], max(-(2**31), min(2**31 - 1, when[1]))
    return m


@given(st.lists(readings(), min_size=1, max_size=5))
def test_quick_and_full_checks_agree(batch: list[metric_pb2.Metric]) -> None:
    # The receiver checks a batch fast and explains a bad one slowly: both must reach one verdict.
    copies = [metric_pb2.Metric.FromString(m.SerializeToString()) for m in batch]
    try:
        check_batch(copies, Limits(10, 300, frozenset({"temperature", "humidity"})), ArrivalClock())
        accepted = True
    except InvalidArgument:
        accepted = False
    latest = time.time_ns() + 300 * 1_000_000_000
    problems = [
        p
        for m in batch
        for p in check_metric(m, Limits(10, 300, frozenset({"temperature", "humidity"})), latest)
    ]
    assert accepted == (not problems)


def test_arrival_times_of_two_workers_never_meet_and_each_increases() -> None:
    clocks = [ArrivalClock(index, 2) for index in range(2)]
    times = [[clock.next_nanos() for _ in range(2_000)] for clock in clocks]
    for index, own in enumerate(times):
        assert all(t // 1000 % 2 == index for t in own)
        assert all(a < b for a, b in itertools.pairwise(own))
    assert not set(times[0]) & set(times[1])


@pytest.mark.parametrize("value", [1e151, -1e200, 1.7976931348623157e308])
def test_a_value_whose_square_overflows_the_statistics_is_refused(value: float) -> None:
    with pytest.raises(InvalidArgument, match=r"metrics\[0\].value: must be within ±1e\+150"):
        check_batch([metric_pb2.Metric(sensor_id="s", metric_type="t", value=value)], LIMITS, ArrivalClock())
    check_batch([metric_pb2.Metric(sensor_id="s", metric_type="t", value=1e150)], LIMITS, ArrivalClock())
