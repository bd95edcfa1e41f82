"""Readings of the bulk doors (InfluxDB line protocol, Prometheus remote write) encoded straight into
what the writer sends, the Metric messages of a MetricBatch grouped by sensor, without a Metric object
each.

A series (sensor, metric type, labels) is checked once, by the checks of every reading
(runtime/validation.py), and its part of a reading's encoding kept; each reading then adds its value
and time, checked here as check_metric checks them: ~2 µs a reading rather than ~15 with a Metric
object, a batch check and a serialization each. The bytes are the ones protobuf writes for the same
Metric, field by field.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Mapping

from metrics.v1 import metric_pb2
from runtime import wire
from runtime.validation import EARLIEST_SECONDS, MAX_ABS_VALUE, NANOS, ArrivalClock, Limits, check_metric

VALUE = struct.Struct("<Bd")  # field 3 (value), a double
CACHED_SERIES = 100_000


class ReadingProblem(ValueError):
    """Why a reading cannot be written, as check_metric says it ("field: problem; ...")."""


class Series:
    """A checked series: its sensor, and the encoding of its Metric fields 1, 2 and 6."""

    __slots__ = ("head", "sensor_id")

    def __init__(self, sensor_id: str, head: bytes) -> None:
        self.sensor_id = sensor_id
        self.head = head


class Readings:
    """Encoded readings, by sensor (each sensor's in the order added)."""

    def __init__(self) -> None:
        self.by_sensor: dict[str, list[bytes]] = {}
        self.count = 0

    def add(self, sensor_id: str, encoded: list[bytes]) -> None:
        found = self.by_sensor.get(sensor_id)
        if found is None:
            self.by_sensor[sensor_id] = encoded
        else:
            found += encoded
        self.count += len(encoded)

    def batches(self, most: int) -> list[tuple[str, bytes, int]]:
        """(sensor, MetricBatch bytes, readings), at most `most` readings each, as the writer takes them."""
        return [
            (sensor, b"".join(readings[i : i + most]), len(readings[i : i + most]))
            for sensor, readings in self.by_sensor.items()
            for i in range(0, len(readings), most)
        ]


class Encoder:
    """Checks and encodes readings; remembers the series it has seen (the same few, request after
    request: an agent sends its series every interval)."""

    def __init__(self, limits: Limits, clock: ArrivalClock) -> None:
        self._limits = limits
        self._clock = clock
        self._series: dict[tuple[str, str, tuple[tuple[str, str], ...]], Series | str] = {}

    def series(self, sensor_id: str, metric_type: str, labels: Mapping[str, str]) -> Series:
        """The series, or ReadingProblem: what check_metric finds wrong with its id, type or labels."""
        key = (sensor_id, metric_type, tuple(labels.items()))
        found = self._series.get(key)
        if found is None:
            metric = metric_pb2.Metric(sensor_id=sensor_id, metric_type=metric_type, labels=labels)
            problems = check_metric(metric, self._limits, 0)
            found = _described(problems) if problems else Series(sensor_id, _head(metric))
            if len(self._series) >= CACHED_SERIES:
                self._series.clear()
            self._series[key] = found
        if isinstance(found, str):
            raise ReadingProblem(found)
        return found

    def latest_us(self) -> int:
        """The latest reading time taken now (µs): the clock's, plus the skew allowed."""
        return (time.time_ns() + int(self._limits.max_future_skew_s * NANOS)) // 1000

    def readings(
        self, series: Series, values: Iterable[tuple[float, int | None]], latest_us: int
    ) -> list[bytes]:
        """The encodings of a series' readings, (value, time µs or None for the time of arrival), or
        ReadingProblem for the first that cannot be written."""
        return [self.reading(series, value, at_us, latest_us) for value, at_us in values]

    def reading(self, series: Series, value: float, at_us: int | None, latest_us: int) -> bytes:
        """The encoding of one reading (see readings)."""
        time_us = self._clock.next_nanos() // 1000 if at_us is None else at_us
        if not -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE or not _EARLIEST_US <= time_us <= latest_us:
            raise ReadingProblem(_problem(series, value, time_us, self._limits))
        seconds, micros = divmod(time_us, 1_000_000)
        stamp = (
            b"\x08" + wire.varint(seconds) + b"\x10" + wire.varint(micros * 1000)
            if micros
            else b"\x08" + wire.varint(seconds)
        )
        body = series.head + VALUE.pack(0x19, value) + b"\x22" + bytes((len(stamp),)) + stamp
        return b"\x0a" + wire.varint(len(body)) + body


_EARLIEST_US = EARLIEST_SECONDS * 1_000_000


def _head(metric: metric_pb2.Metric) -> bytes:
    """The encoding of a Metric with its id, type and labels only (fields 1, 2 and 6)."""
    return metric.SerializeToString(deterministic=True)


def _problem(series: Series, value: float, time_us: int, limits: Limits) -> str:
    metric = metric_pb2.Metric.FromString(series.head)
    metric.value = value
    metric.reading_time.FromMicroseconds(time_us)
    latest_nanos = time.time_ns() + int(limits.max_future_skew_s * NANOS)
    problems = [p for p in check_metric(metric, limits, latest_nanos) if p[0] in ("value", "reading_time")]
    return _described(problems or [("reading_time", "is later than allowed")])


def _described(problems: list[tuple[str, str]]) -> str:
    return "; ".join(f"{field}: {text}" for field, text in problems)
