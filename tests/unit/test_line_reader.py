"""Bodies of line protocol read into encoded readings (receiver/line_reader.py): what lines share is
read once, and the readings are those the full parse (runtime/line_protocol.py) makes."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from metrics.v1 import metric_pb2
from receiver.encoded import Encoder
from receiver.line_reader import LineReader
from runtime import line_protocol as lp
from runtime.validation import ArrivalClock, Limits

LIMITS = Limits(max_batch_readings=10_000, max_future_skew_s=300)
TAGS = ("sensor", "host")
NOW_S = int(time.time())


def read(text: str, precision: str = "s") -> tuple[list[metric_pb2.Metric], dict[str, str]]:
    found = LineReader(Encoder(LIMITS, ArrivalClock()), TAGS).read(text, precision)
    metrics = [
        m
        for _, batch, _ in found.readings.batches(10_000)
        for m in metric_pb2.MetricBatch.FromString(batch).metrics
    ]
    return metrics, {v.field: v.description for v in found.refused}


def expected(line: str, precision: str = "s") -> list[metric_pb2.Metric]:
    """The readings of the full parse, as Metric messages."""
    found = lp.readings(lp.parse(line), TAGS, precision)
    out = []
    for metric_type, value in found.values:
        metric = metric_pb2.Metric(
            sensor_id=found.sensor_id, metric_type=metric_type, value=value, labels=found.labels
        )
        assert found.time_us is not None
        metric.reading_time.FromMicroseconds(found.time_us)
        out.append(metric)
    return out


names = st.sampled_from(["boiler", "cpu", "m"])
keys = st.sampled_from(["value", "temp", "usage_idle", "on", "sensor", "host", "site"])
ids = st.sampled_from(["plant-7-1", "gw.2", "a:b"])
values = st.one_of(
    st.floats(min_value=-1e9, max_value=1e9).map(repr), st.integers(-1000, 1000).map(lambda i: f"{i}i"),
    st.sampled_from(["t", "false", "1u"]),
)  # fmt: skip


@given(
    st.lists(st.tuples(names, st.dictionaries(keys, ids, max_size=3), st.dictionaries(keys, values, min_size=1, max_size=3),
                       st.integers(NOW_S - 86_400, NOW_S)), min_size=1, max_size=5),
)  # fmt: skip
def test_the_readings_are_those_of_the_full_parse(
    lines: list[tuple[str, dict[str, str], dict[str, str], int]],
) -> None:
    text = "\n".join(
        name + "".join(f",{k}={v}" for k, v in tags.items()) + " " + ",".join(f"{k}={v}" for k, v in fields.items()) + f" {at}"
        for name, tags, fields, at in lines
    )  # fmt: skip
    got, refused = read(text)
    want: list[metric_pb2.Metric] = []
    want_refused = set()
    for number, line in lp.lines(text):
        try:
            want += expected(line)
        except lp.LineError:
            want_refused.add(f"line {number}")
    assert set(refused) == want_refused
    key = lambda m: (m.sensor_id, m.metric_type, m.reading_time.ToMicroseconds(), m.value)  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key)


def test_escapes_strings_and_errors_take_the_full_parse() -> None:
    got, refused = read(
        'boiler\\ room,sensor=b1,site=plant\\,7 value=1,note="a b" 1733390000\n'
        "boiler,sensor=b1 value=2 1733390001\n"
        "boiler,site=x value=3\n"
        "boiler,sensor=b1 value=hot\n"
        "Bad,sensor=b1 value=4\n"
    )
    assert refused.keys() == {"line 1", "line 3", "line 4", "line 5"}
    assert "field 'note' is a string" in refused["line 1"]
    assert refused["line 3"] == "no sensor: the line has none of the tags sensor, host"
    assert "metric_type: 'Bad' is not a metric type" in refused["line 5"]
    assert [(m.sensor_id, m.metric_type, m.value) for m in got] == [("b1", "boiler", 2.0)]


def test_a_bad_value_refuses_the_whole_line() -> None:
    encoder = Encoder(LIMITS, ArrivalClock())
    found = LineReader(encoder, TAGS).read(f"m,sensor=s value=1,other=1e200 {NOW_S}", "s")
    assert (found.readings.count, [v.field for v in found.refused]) == (0, ["line 1"])
    assert "value: must be within" in found.refused[0].description
