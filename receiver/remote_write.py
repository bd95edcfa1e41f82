"""Prometheus remote write 1.0 read into readings (docs/prometheus.md).

A series is `__name__` (the metric type) and labels; each of its samples is a reading of the sensor
its first sensor label names (`sensor`, else `instance`), the series' other labels the reading's
labels. A series is taken whole or not at all. Stale markers (the NaN Prometheus writes when a series
disappears) are dropped and counted: they say a series ended, not a value.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from metrics.v1 import metric_pb2, prometheus_pb2
from runtime import snappy

STALE_MARKER = struct.pack("<Q", 0x7FF0000000000002)
NAME = "__name__"


@dataclass
class Series:
    """The readings of a request, a list per series, and what could not be taken."""

    readings: list[tuple[int, list[metric_pb2.Metric]]] = field(default_factory=list)
    # (index of the series, why it cannot be readings)
    refused: list[tuple[int, str]] = field(default_factory=list)
    stale: int = 0


def decode(body: bytes, max_bytes: int) -> prometheus_pb2.PrometheusWriteRequest:
    """The request in a snappy-compressed body, or ValueError saying why there is none."""
    request = prometheus_pb2.PrometheusWriteRequest()
    try:
        request.ParseFromString(snappy.decompress(body, max_bytes))
    except snappy.SnappyError:
        raise
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, whatever its module
        raise ValueError(f"is not a Prometheus WriteRequest: {exc}") from None
    return request


def readings(request: prometheus_pb2.PrometheusWriteRequest, sensor_labels: Sequence[str]) -> Series:
    found = Series()
    for index, series in enumerate(request.timeseries):
        labels = {label.name: label.value for label in series.labels}
        name = labels.pop(NAME, "")
        sensor_label = next((s for s in sensor_labels if labels.get(s)), None)
        problem = (
            "has no metric name (the label __name__)" if not name
            else f"has none of the sensor labels {', '.join(sensor_labels)}" if sensor_label is None
            else "holds native histograms, which are not stored" if len(series.histograms)
            else None
        )  # fmt: skip
        if problem is not None:
            found.refused.append((index, f"{_described(name, labels)} {problem}"))
            continue
        sensor_id = labels.pop(sensor_label)  # type: ignore[arg-type]
        metrics = []
        for sample in series.samples:
            value = sample.value
            if math.isnan(value) and struct.pack("<d", value) == STALE_MARKER:
                found.stale += 1
                continue
            metric = metric_pb2.Metric(sensor_id=sensor_id, metric_type=name, value=value, labels=labels)
            seconds, millis = divmod(sample.timestamp, 1000)
            metric.reading_time.seconds = seconds
            metric.reading_time.nanos = millis * 1_000_000
            metrics.append(metric)
        if metrics:
            found.readings.append((index, metrics))
    return found


def _described(name: str, labels: dict[str, str], most: int = 3) -> str:
    """A series as PromQL writes it, its first labels only: what an operator finds it by."""
    shown = ", ".join(f'{k}="{v}"' for k, v in list(labels.items())[:most])
    more = ", ..." if len(labels) > most else ""
    return f"{name or ''}{{{shown}{more}}}"
