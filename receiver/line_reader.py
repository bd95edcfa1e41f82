"""Bodies of InfluxDB line protocol read into encoded readings (docs/line-protocol.md).

What lines share is read once: the first part of a line (its measurement and tags) names the same
sensor and labels line after line, and a field of it the same series. A line with escapes or string
fields is read in full by runtime/line_protocol.py; the others by splitting, with its functions. A line
is taken whole (all its fields) or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from receiver.encoded import CACHED_SERIES, Encoder, ReadingProblem, Readings, Series
from runtime import line_protocol as lp
from runtime.errors import Violation

# A line's first part, read: (sensor id, labels, measurement), or why it names no sensor.
Head = tuple[str, dict[str, str], str] | str


@dataclass
class Found:
    readings: Readings = field(default_factory=Readings)
    lines: int = 0  # lines taken
    refused: list[Violation] = field(default_factory=list)


class LineReader:
    def __init__(self, encoder: Encoder, sensor_tags: Sequence[str]) -> None:
        self._encoder = encoder
        self._sensor_tags = tuple(sensor_tags)
        self._heads: dict[str, Head] = {}
        self._series: dict[tuple[str, str], Series | str] = {}

    def read(self, text: str, precision: str) -> Found:
        found = Found()
        latest_us = self._encoder.latest_us()
        for number, line in lp.lines(text):
            try:
                sensor_id, encoded = self._line(line, precision, latest_us)
            except (lp.LineError, ReadingProblem) as why:
                found.refused.append(Violation(f"line {number}", str(why)))
                continue
            found.readings.add(sensor_id, encoded)
            found.lines += 1
        return found

    def _line(self, line: str, precision: str, latest_us: int) -> tuple[str, list[bytes]]:
        """The line's sensor and encoded readings, or LineError / ReadingProblem."""
        parts = line.split(" ")
        if "\\" in line or '"' in line or len(parts) not in (2, 3) or not all(parts):
            return self._escaped(line, precision, latest_us)
        head = parts[0]
        known = self._heads.get(head) or self._learn(head)
        if isinstance(known, str):
            raise lp.LineError(known)
        sensor_id, labels, measurement = known
        time_us = lp.parse_timestamp(parts[2], precision) if len(parts) == 3 else None
        encoded = []
        for key, value in lp.split_fields(parts[1]).items():
            series = self._series.get((head, key))
            if series is None:
                series = self._series_of(head, key, sensor_id, lp.metric_type(measurement, key), labels)
            if isinstance(series, str):
                raise ReadingProblem(series)
            encoded.append(self._encoder.reading(series, lp.number(key, value), time_us, latest_us))
        return sensor_id, encoded

    def _escaped(self, line: str, precision: str, latest_us: int) -> tuple[str, list[bytes]]:
        found = lp.readings(lp.parse(line), self._sensor_tags, precision)
        encoded = [
            self._encoder.reading(self._encoder.series(found.sensor_id, metric_type, found.labels), value,
                                  found.time_us, latest_us)
            for metric_type, value in found.values
        ]  # fmt: skip
        return found.sensor_id, encoded

    def _learn(self, head: str) -> Head:
        known: Head
        try:
            measurement, tags = lp.split_head(head)
            if not measurement:
                raise lp.LineError("the measurement is empty")  # noqa: TRY301 - one reason among several
            sensor_id, labels = lp.sensor_of(tags, self._sensor_tags)
            known = (sensor_id, labels, measurement)
        except lp.LineError as why:
            known = str(why)
        if len(self._heads) >= CACHED_SERIES:
            self._heads.clear()
        self._heads[head] = known
        return known

    def _series_of(
        self, head: str, key: str, sensor_id: str, metric_type: str, labels: dict[str, str]
    ) -> Series | str:
        known: Series | str
        try:
            known = self._encoder.series(sensor_id, metric_type, labels)
        except ReadingProblem as why:
            known = str(why)
        if len(self._series) >= CACHED_SERIES:
            self._series.clear()
        self._series[(head, key)] = known
        return known
