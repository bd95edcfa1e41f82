"""What consumers take from Kafka records, and the reason they give for what they cannot use."""

from __future__ import annotations

import math
import time
import uuid

import pytest
from aiokafka import ConsumerRecord
from hypothesis import given
from hypothesis import strategies as st

from metrics.v1 import event_pb2, metric_pb2
from runtime import kafka
from runtime.records import Unusable, read_event, read_metric_batch
from runtime.validation import FUTURE_SKEW_S, ArrivalClock, Limits, check_batch

NOW_S = int(time.time())
BATCH_TYPE = [(kafka.MESSAGE_TYPE_HEADER, kafka.METRIC_BATCH_TYPE.encode())]
EVENT_TYPE = [(kafka.MESSAGE_TYPE_HEADER, kafka.EVENT_TYPE.encode())]


def reading(
    sensor: str = "s-1", value: float = 20.0, seconds: int | None = NOW_S, **fields: object
) -> metric_pb2.Metric:
    metric = metric_pb2.Metric(sensor_id=sensor, metric_type="temperature", value=value, **fields)  # type: ignore[arg-type]
    if seconds is not None:
        metric.reading_time.seconds = seconds
    return metric


def record(
    value: bytes, key: bytes | None = b"s-1", headers: list[tuple[str, bytes]] | None = None
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="metrics", partition=0, offset=7, timestamp=0, timestamp_type=0, key=key, value=value,
        checksum=None, serialized_key_size=0, serialized_value_size=len(value),
        headers=BATCH_TYPE if headers is None else headers,
    )  # fmt: skip


def batch(*metrics: metric_pb2.Metric) -> bytes:
    return metric_pb2.MetricBatch(metrics=metrics).SerializeToString()


def test_a_good_record_is_read() -> None:
    assert [m.value for m in read_metric_batch(record(batch(reading(), reading(value=21)))).metrics] == [
        20,
        21,
    ]


def test_a_record_of_several_sensors_has_no_key() -> None:
    value = batch(reading("a"), reading("b"))
    assert len(read_metric_batch(record(value, key=None)).metrics) == 2
    with pytest.raises(Unusable, match="key 'a' is not the sensor id of every reading"):
        read_metric_batch(record(value, key=b"a"))


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([], "no message-type header"),
        ([(kafka.MESSAGE_TYPE_HEADER, b"metrics.v1.Event")], "message-type is 'metrics.v1.Event', not metrics.v1.MetricBatch"),
    ],
)  # fmt: skip
def test_the_message_type_header_must_name_the_topics_type(
    headers: list[tuple[str, bytes]], reason: str
) -> None:
    with pytest.raises(Unusable, match=reason):
        read_metric_batch(record(batch(reading()), headers=headers))


@pytest.mark.parametrize(
    ("value", "key", "reason"),
    [
        (b"\xff\xfe not protobuf", b"s-1", "value is not a metrics.v1.MetricBatch"),
        (batch(reading())[:-3], b"s-1", "value is not a metrics.v1.MetricBatch"),
        (batch(reading(sensor="a\x00b")), None, r"metrics\[0\].sensor_id: 'a\\x00b' has characters other than"),
        (batch(reading(unit="c\x00")), b"s-1", r"metrics\[0\].unit: must not contain the NUL character"),
        (batch(reading(labels={"k": "v\x00"})), b"s-1", r"metrics\[0\].labels\['k'\]: must not contain the NUL"),
        (batch(reading(value=math.nan)), b"s-1", r"metrics\[0\].value: must be a finite number, got nan"),
        (batch(reading(value=-math.inf)), b"s-1", r"metrics\[0\].value: must be a finite number, got -inf"),
        (batch(reading(seconds=None)), b"s-1", r"metrics\[0\].reading_time: is required"),
        (batch(reading(seconds=100)), b"s-1", r"metrics\[0\].reading_time: is before 2000-01-01"),
        (batch(reading(seconds=NOW_S + 86_400)), b"s-1", r"metrics\[0\].reading_time: is in the future"),
        (batch(reading(seconds=253_402_300_799)), b"s-1", r"metrics\[0\].reading_time: is in the future"),
        (batch(), b"s-1", "metrics: at least one reading is required"),
        (batch(reading()), b"", "key '' is not the sensor id of every reading"),
        (batch(reading(sensor="x" * 129)), None, r"metrics\[0\].sensor_id: is 129 characters, more than 128"),
    ],
    # Named, not shown: some values hold the time of collection, and parallel runs must agree on ids.
    ids=["garbage", "truncated", "nul-in-id", "nul-in-unit", "nul-in-label", "nan", "-inf", "no-time",
         "before-2000", "tomorrow", "year-9999", "empty", "wrong-key", "long-id"],
)  # fmt: skip
def test_a_record_no_consumer_can_use_is_refused_naming_why(
    value: bytes, key: bytes | None, reason: str
) -> None:
    with pytest.raises(Unusable, match=reason):
        read_metric_batch(record(value, key=key))


def test_invalid_utf8_in_a_string_field_does_not_decode() -> None:
    value = batch(reading(sensor="s-1")).replace(b"s-1", b"s\xff1")
    with pytest.raises(Unusable, match=r"value is not a metrics\.v1\.MetricBatch"):
        read_metric_batch(record(value))


def test_an_oversized_record_is_refused_before_its_readings_are_checked() -> None:
    value = metric_pb2.MetricBatch(metrics=[reading()] * (kafka.MAX_RECORD_READINGS + 1)).SerializeToString()
    with pytest.raises(Unusable, match=f"oversized: {kafka.MAX_RECORD_READINGS + 1} readings"):
        read_metric_batch(record(value))


def test_a_reason_names_the_first_problems_and_counts_the_rest() -> None:
    value = batch(*[reading(value=math.nan)] * 8)
    with pytest.raises(Unusable, match=r"metrics\[4\].value: .* \(and 3 more\)$"):
        read_metric_batch(record(value))


def event(**fields: object) -> event_pb2.Event:
    values: dict[str, object] = {
        "event_id": str(uuid.uuid4()), "kind": event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED, "sensor_id": "s-1",
        "metric_type": "temperature", "value": 99.0, "threshold": 95.0, "count": 3,
    }  # fmt: skip
    values.update(fields)
    message = event_pb2.Event(**values)  # type: ignore[arg-type]
    for name in ("reading_time", "detect_time"):
        if name not in fields:
            getattr(message, name).seconds = NOW_S
    return message


def event_record(message: event_pb2.Event) -> ConsumerRecord[bytes, bytes]:
    return record(message.SerializeToString(), headers=EVENT_TYPE)


def test_a_good_event_is_read() -> None:
    good = event()
    assert read_event(event_record(good)) == good


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"event_id": "not-a-uuid"}, "event.event_id: 'not-a-uuid' is not a UUID"),
        ({"kind": 0}, "event.kind: 0 is not a known kind of event"),
        ({"kind": 77}, "event.kind: 77 is not a known kind of event"),
        ({"sensor_id": "a\x00"}, "event.sensor_id"),
        ({"value": math.inf}, "event.value: must be a finite number"),
        ({"threshold": math.nan}, "event.threshold: must be a finite number"),
        ({"detect_time": None}, "event.detect_time: is required"),
    ],
)  # fmt: skip
def test_an_event_no_consumer_can_use_is_refused_naming_why(fields: dict[str, object], reason: str) -> None:
    message = event(**{k: v for k, v in fields.items() if v is not None})
    if fields.get("detect_time", ...) is None:
        message.ClearField("detect_time")
    with pytest.raises(Unusable, match=reason):
        read_event(event_record(message))


metric_fields = st.fixed_dictionaries(
    {
        "sensor_id": st.text(max_size=140),
        "metric_type": st.text(max_size=70),
        "value": st.floats(),
        "unit": st.text(max_size=40),
        "labels": st.dictionaries(st.text(max_size=70), st.text(max_size=300), max_size=18),
        "seconds": st.one_of(st.none(), st.integers(-(2**40), 2**40)),
        "nanos": st.integers(-(2**31), 2**31 - 1),
    }
)


def arbitrary_metric(fields: dict[str, object]) -> metric_pb2.Metric:
    metric = metric_pb2.Metric(
        sensor_id=fields["sensor_id"], metric_type=fields["metric_type"], value=fields["value"],  # type: ignore[arg-type]
        unit=fields["unit"], labels=fields["labels"],  # type: ignore[arg-type]
    )  # fmt: skip
    if fields["seconds"] is not None:
        metric.reading_time.seconds, metric.reading_time.nanos = fields["seconds"], fields["nanos"]  # type: ignore[assignment]
    return metric


@given(
    st.lists(metric_fields, max_size=4),
    st.one_of(st.none(), st.binary(max_size=20)),
    st.sampled_from([BATCH_TYPE, EVENT_TYPE, []]),
    st.one_of(st.none(), st.binary(max_size=200)),
)
def test_any_record_is_either_usable_or_unusable_with_a_reason(
    readings: list[dict[str, object]],
    key: bytes | None,
    headers: list[tuple[str, bytes]],
    garbage: bytes | None,
) -> None:
    # Whatever a producer writes, a consumer gets readings that pass the receiver's own check,
    # or Unusable with a reason; never another exception (which would stall its partition).
    value = garbage if garbage is not None else batch(*(arbitrary_metric(f) for f in readings))
    try:
        usable = read_metric_batch(record(value, key=key, headers=headers))
    except Unusable as exc:
        assert str(exc)
        return
    assert headers == BATCH_TYPE
    check_batch(list(usable.metrics), Limits(kafka.MAX_RECORD_READINGS, FUTURE_SKEW_S), ArrivalClock())
    assert all(m.HasField("reading_time") for m in usable.metrics)
    assert key is None or all(m.sensor_id.encode() == key for m in usable.metrics)
