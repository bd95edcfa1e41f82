"""What devices publish, as readings (bridge/payloads.py): every form, and each bad one named."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from bridge import payloads
from metrics.v1 import metric_pb2
from runtime.records import Unusable


def test_compact_json_is_a_reading_per_metric_type_at_the_time_of_arrival() -> None:
    metrics = payloads.readings("metrics/v1/plant-7-1", b'{"temperature": 21.5, "humidity": 40}')
    assert [(m.sensor_id, m.metric_type, m.value, m.HasField("reading_time")) for m in metrics] == [
        ("plant-7-1", "temperature", 21.5, False),
        ("plant-7-1", "humidity", 40.0, False),
    ]


@pytest.mark.parametrize(
    ("ts", "micros"),
    [
        ('"2026-12-04T10:00:00Z"', 1_796_378_400_000_000),
        ('"2026-12-04T11:00:00.250+01:00"', 1_796_378_400_250_000),
        ("1796378400123", 1_796_378_400_123_000),
    ],
)
def test_compact_json_takes_the_devices_own_time(ts: str, micros: int) -> None:
    [metric] = payloads.readings("metrics/v1/s-1", f'{{"temperature": 1, "ts": {ts}}}'.encode())
    assert metric.reading_time.ToMicroseconds() == micros


def test_a_metric_batch_as_protobuf_or_json_keeps_its_readings_under_the_topics_prefix() -> None:
    batch = metric_pb2.MetricBatch(
        metrics=[
            metric_pb2.Metric(sensor_id="gw-1-a", metric_type="temperature", value=1.0),
            metric_pb2.Metric(metric_type="pressure", value=2.0),  # no id: the topic's
        ]
    )
    batch.metrics[0].reading_time.FromMicroseconds(1_796_378_400_000_000)
    for topic, payload in (
        ("metrics/v1/gw-1-/pb", batch.SerializeToString()),
        ("metrics/v1/gw-1-/json", json_format.MessageToJson(batch).encode()),
    ):
        metrics = payloads.readings(topic, payload)
        assert [(m.sensor_id, m.metric_type, m.value) for m in metrics] == [
            ("gw-1-a", "temperature", 1.0),
            ("gw-1-", "pressure", 2.0),
        ]
        assert metrics[0].reading_time.ToMicroseconds() == 1_796_378_400_000_000


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("other/s-1", b'{"t": 1}', "topic 'other/s-1': not under metrics/v1/"),
        ("metrics/v1/s 1", b'{"t": 1}', "is not a sensor id"),
        ("metrics/v1/s-1/xml", b"<t/>", "after the sensor id, only /pb or /json"),
        ("metrics/v1/s-1/", b'{"t": 1}', "after the sensor id, only /pb or /json"),
        ("metrics/v1/s-1", b"21.5", "must be a JSON object"),
        ("metrics/v1/s-1", b"{not json", "payload: not JSON"),
        ("metrics/v1/s-1", b"{}", "payload: no reading"),
        ("metrics/v1/s-1", b'{"ts": 1796378400000}', "payload: no reading"),
        ("metrics/v1/s-1", b'{"Temp": 1}', "payload.Temp: not a metric type"),
        ("metrics/v1/s-1", b'{"temperature": "hot"}', "payload.temperature: 'hot' is not a number"),
        ("metrics/v1/s-1", b'{"temperature": true}', "payload.temperature: 'True' is not a number"),
        ("metrics/v1/s-1", b'{"temperature": 1e309}', "payload.temperature: inf is out of range"),
        (
            "metrics/v1/s-1",
            b'{"temperature": 1, "ts": "yesterday"}',
            "payload.ts: 'yesterday' is not an RFC 3339",
        ),
        (
            "metrics/v1/s-1",
            b'{"temperature": 1, "ts": "2026-12-04T10:00:00"}',
            "payload.ts: .* with its offset",
        ),
        ("metrics/v1/s-1", b'{"temperature": 1, "ts": -5}', "payload.ts: -5 is not milliseconds"),
        ("metrics/v1/s-1/pb", b"\xff\xfe", r"payload: not a metrics.v1.MetricBatch \(pb\)"),
        ("metrics/v1/s-1/json", b'{"metrics": 3}', r"payload: not a metrics.v1.MetricBatch \(json\)"),
        (
            "metrics/v1/gw-1/pb",
            metric_pb2.MetricBatch(
                metrics=[metric_pb2.Metric(sensor_id="other", metric_type="t")]
            ).SerializeToString(),
            r"metrics\[0\].sensor_id: 'other' is not under the topic's 'gw-1'",
        ),
    ],
)
def test_what_is_not_readings_is_refused_naming_the_field(topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises(Unusable, match=reason):
        payloads.readings(topic, payload)
