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

from metrics.v1 import prometheus_pb2
from receiver.encoded import CACHED_SERIES, Encoder, ReadingProblem, Readings, Series
from runtime import snappy

STALE_MARKER = struct.pack("<Q", 0x7FF0000000000002)
NAME = "__name__"

Labels = tuple[tuple[str, str], ...]


@dataclass
class Found:
    """The readings of a request's series, and what could not be taken."""

    readings: Readings = field(default_factory=Readings)
    series: int = 0  # series taken
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


class SeriesReader:
    """Reads requests into encoded readings, remembering each series by its labels (an agent sends
    the same ones every interval)."""

    def __init__(self, encoder: Encoder, sensor_labels: Sequence[str]) -> None:
        self._encoder = encoder
        self._sensor_labels = tuple(sensor_labels)
        self._known: dict[Labels, Series | str] = {}

    def read(self, request: prometheus_pb2.PrometheusWriteRequest) -> Found:
        found = Found()
        latest_us = self._encoder.latest_us()
        for index, series in enumerate(request.timeseries):
            labels = tuple([(label.name, label.value) for label in series.labels])
            known = self._known.get(labels) or self._learn(labels)
            samples, stale = [], 0
            for sample in series.samples:
                value = sample.value
                if math.isnan(value) and struct.pack("<d", value) == STALE_MARKER:
                    stale += 1
                else:
                    samples.append((value, sample.timestamp * 1000))
            try:
                sensor_id, encoded = self._encoded(known, labels, samples, len(series.histograms), latest_us)
            except ReadingProblem as why:
                found.refused.append((index, str(why)))
                continue
            found.readings.add(sensor_id, encoded)
            found.series += 1
            found.stale += stale
        return found

    def _encoded(
        self,
        known: Series | str,
        labels: Labels,
        samples: list[tuple[float, int]],
        histograms: int,
        latest_us: int,
    ) -> tuple[str, list[bytes]]:
        """A series' sensor and encoded readings, or ReadingProblem."""
        if isinstance(known, str):
            raise ReadingProblem(known)
        if histograms:
            raise ReadingProblem(f"{_described(labels)} holds native histograms, which are not stored")
        return known.sensor_id, self._encoder.readings(known, samples, latest_us)

    def _learn(self, labels: Labels) -> Series | str:
        """The series of these labels, or why they are none (either remembered)."""
        others = dict(labels)
        name = others.pop(NAME, "")
        sensor_label = next((s for s in self._sensor_labels if others.get(s)), None)
        known: Series | str
        if not name:
            known = f"{_described(labels)} has no metric name (the label __name__)"
        elif sensor_label is None:
            known = f"{_described(labels)} has none of the sensor labels {', '.join(self._sensor_labels)}"
        else:
            sensor_id = others.pop(sensor_label)
            try:
                known = self._encoder.series(sensor_id, name, others)
            except ReadingProblem as why:
                known = f"{_described(labels)}: {why}"
        if len(self._known) >= CACHED_SERIES:
            self._known.clear()
        self._known[labels] = known
        return known


def _described(labels: Labels, most: int = 3) -> str:
    """A series as PromQL writes it, its first labels only: what an operator finds it by."""
    name = dict(labels).get(NAME, "")
    others = [(k, v) for k, v in labels if k != NAME]
    shown = ", ".join(f'{k}="{v}"' for k, v in others[:most])
    more = ", ..." if len(others) > most else ""
    return f"{name}{{{shown}{more}}}"
