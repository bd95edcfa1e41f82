"""What devices publish, as readings: the topic names the sensor, the payload carries the values.

  metrics/v1/<sensor id>        {"temperature": 21.5, "humidity": 40}: metric type -> number, and an
                                optional "ts", the device's own time (RFC 3339, or milliseconds since
                                1970); without it, the time of arrival
  metrics/v1/<sensor id>/pb     a metrics.v1.MetricBatch (protobuf binary): the Kafka payload itself
  metrics/v1/<sensor id>/json   a metrics.v1.MetricBatch in the proto3 JSON mapping

In a MetricBatch each reading's sensor id must start with the topic's (a gateway publishes for the
sensors under its prefix); an empty one is the topic's. Anything else raises Unusable naming the
field and the problem: the message is dead-lettered with that reason.
"""

from __future__ import annotations

import json
import math
from datetime import datetime

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from metrics.v1 import metric_pb2
from runtime.records import Unusable
from runtime.validation import MAX_ABS_VALUE, METRIC_TYPE, SENSOR_ID

TOPIC_ROOT = "metrics/v1/"
FORMATS = ("", "pb", "json")
TIME_KEY = "ts"


def sensor_of(topic: str) -> tuple[str, str]:
    """(sensor id, format) of a topic: format "" (compact JSON), "pb" or "json"."""
    if not topic.startswith(TOPIC_ROOT):
        raise Unusable(f"topic {topic[:200]!r}: not under {TOPIC_ROOT}", "topic")
    sensor, _, form = topic.removeprefix(TOPIC_ROOT).partition("/")
    if SENSOR_ID.fullmatch(sensor) is None:
        raise Unusable(
            f"topic {topic[:200]!r}: {sensor[:130]!r} is not a sensor id (A-Z a-z 0-9 . _ : -)", "topic"
        )
    if form not in FORMATS or (form == "" and topic.endswith("/")):
        raise Unusable(f"topic {topic[:200]!r}: after the sensor id, only /pb or /json", "topic")
    return sensor, form


def readings(topic: str, payload: bytes) -> list[metric_pb2.Metric]:
    """The readings of a message (times as given; none where the payload gives none)."""
    sensor, form = sensor_of(topic)
    if form == "":
        return compact(sensor, payload)
    batch = metric_pb2.MetricBatch()
    try:
        if form == "pb":
            batch.ParseFromString(payload)
        else:
            json_format.Parse(payload, batch)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
        raise Unusable(
            f"payload: not a metrics.v1.MetricBatch ({form}): {str(exc)[:200]}", "decode"
        ) from None
    for i, metric in enumerate(batch.metrics):
        if not metric.sensor_id:
            metric.sensor_id = sensor
        elif not metric.sensor_id.startswith(sensor):
            raise Unusable(
                f"metrics[{i}].sensor_id: {metric.sensor_id[:130]!r} is not under the topic's {sensor!r}",
                "sensor",
            )
    return list(batch.metrics)


def compact(sensor: str, payload: bytes) -> list[metric_pb2.Metric]:
    """{"<metric type>": <number>, ..., "ts": <time>} as readings of `sensor`."""
    try:
        values = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unusable(f"payload: not JSON ({str(exc)[:200]})", "decode") from None
    if not isinstance(values, dict):
        raise Unusable("payload: must be a JSON object of metric type -> number", "decode")
    stamp = _time(values.pop(TIME_KEY)) if TIME_KEY in values else None
    if not values:
        raise Unusable('payload: no reading (a metric type -> number, e.g. {"temperature": 21.5})', "decode")
    out = []
    for metric_type, value in values.items():
        if METRIC_TYPE.fullmatch(metric_type) is None:
            raise Unusable(
                f"payload.{metric_type[:70]}: not a metric type (a-z, 0-9, _ and ., from a letter)", "decode"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Unusable(f"payload.{metric_type}: {str(value)[:50]!r} is not a number", "decode")
        if not math.isfinite(value) or abs(value) > MAX_ABS_VALUE:
            raise Unusable(f"payload.{metric_type}: {value!r} is out of range", "decode")
        metric = metric_pb2.Metric(sensor_id=sensor, metric_type=metric_type, value=float(value))
        if stamp is not None:
            metric.reading_time.FromMicroseconds(stamp)
        out.append(metric)
    return out


def _time(value: object) -> int:
    """A device's "ts": RFC 3339, or milliseconds since 1970; microseconds since 1970."""
    if isinstance(value, bool):
        raise Unusable("payload.ts: must be an RFC 3339 time or milliseconds since 1970", "decode")
    if isinstance(value, int | float):
        if not math.isfinite(value) or not 0 < value < 1e14:
            raise Unusable(f"payload.ts: {value!r} is not milliseconds since 1970", "decode")
        return round(value * 1000)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return round(moment.timestamp() * 1_000_000)
    raise Unusable(f"payload.ts: {str(value)[:50]!r} is not an RFC 3339 time with its offset", "decode")
