"""InfluxDB line protocol, as Telegraf and the InfluxDB clients write it, read into readings.

    measurement[,tag=value...] field=value[,field=value...] [timestamp]

Escapes: in a measurement, "," and " " after a backslash; in tag keys, tag values and field keys, also
"="; a string field is double-quoted, with \\" and \\\\ inside. Values: floats (1, -1.5e3), integers
(1i), unsigned integers (1u), booleans (t, true, True, TRUE, f, ...), strings ("..."). The timestamp
is an integer in the request's precision (ns, us, ms or s); none: the time of arrival. Lines starting
with "#" and blank lines are skipped.

Readings (docs/line-protocol.md): the field `value` of measurement `m` is metric type `m`, any other
field `f` is `m_f` (as Telegraf names Prometheus metrics); the first of the sensor tags the line has
(`sensor`, else `host`) is the sensor id, the other tags are labels; integers and booleans (1, 0) are
values; a string field makes the line unusable. A line is taken whole or not at all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# Microseconds per unit of each precision (nanoseconds: divided).
PRECISIONS = {"ns": None, "n": None, "us": 1, "u": 1, "ms": 1_000, "s": 1_000_000}
# What a backslash escapes outside strings.
ESCAPED = re.compile(r"\\([,= \\])")
SHAPE = "expected a measurement (and tags), fields and an optional timestamp, separated by spaces"
TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
FALSE = frozenset({"f", "F", "false", "False", "FALSE"})


class LineError(ValueError):
    """A line that is not line protocol, or not readings: the reason, for its line number."""


@dataclass(frozen=True)
class Line:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int | bool | str]
    timestamp: int | None


def lines(text: str) -> Iterator[tuple[int, str]]:
    """Each line of `text` that is not blank or a comment: its number (from 1) and its text."""
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r").strip(" \t")
        if line and not line.startswith("#"):
            yield number, line


def parse(line: str) -> Line:
    if "\\" not in line and '"' not in line:  # most lines: nothing escaped, no strings
        parts = line.split(" ")
        if len(parts) not in (2, 3) or not all(parts):
            raise LineError(SHAPE)
        timestamp = _timestamp(parts[2]) if len(parts) == 3 else None
        measurement, tags = split_head(parts[0])
        return _checked(measurement, tags, split_fields(parts[1]), timestamp)
    return _parse_escaped(line)


def split_head(head: str) -> tuple[str, dict[str, str]]:
    """The measurement and tags of a line's first part, without escapes."""
    measurement, *tag_parts = head.split(",")
    return measurement, dict(_pair(t, "tag") for t in tag_parts)


def split_fields(text: str) -> dict[str, float | int | bool | str]:
    """The fields of a line's second part, without escapes or strings."""
    return {key: _value(key, value) for key, value in (_pair(f, "field") for f in text.split(","))}


def parse_timestamp(text: str, precision: str) -> int:
    """A line's timestamp, in microseconds."""
    return to_micros(_timestamp(text), precision)


def _pair(text: str, what: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key or not value:
        raise LineError(f"{what} {text!r} is not key=value")
    return key, value


def _checked(measurement: str, tags: dict[str, str], fields: dict[str, float | int | bool | str],
             timestamp: int | None) -> Line:  # fmt: skip
    if not measurement:
        raise LineError("the measurement is empty")
    if not fields:
        raise LineError("no fields")
    return Line(measurement, tags, fields, timestamp)


def _timestamp(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LineError(f"timestamp {text!r} is not an integer") from None


def _value(key: str, text: str) -> float | int | bool | str:
    last = text[-1]
    if last in "iu" and text[:-1].lstrip("-").isdigit():
        return int(text[:-1])
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    try:
        value = float(text)
    except ValueError:
        raise LineError(f"field {key!r}: {text!r} is not a number, boolean or string") from None
    if not math.isfinite(value):
        raise LineError(f"field {key!r}: {text!r} is not a finite number")
    return value


def _parse_escaped(line: str) -> Line:
    """The general case: backslash escapes, and string fields (which may hold spaces and commas)."""
    sections = _split(line, " ", strings_after=1)
    if len(sections) not in (2, 3) or not all(sections):
        raise LineError(SHAPE)
    measurement, *tag_parts = _split(sections[0], ",")
    tags = dict(_escaped_pair(t, "tag") for t in tag_parts)
    fields = {
        key: _value(key, text)
        for key, text in (_escaped_pair(f, "field") for f in _split(sections[1], ",", 0))
    }
    timestamp = _timestamp(sections[2]) if len(sections) == 3 else None
    return _checked(_unescape(measurement), tags, fields, timestamp)


def _split(text: str, separator: str, strings_after: int | None = None) -> list[str]:
    """`text` split at each `separator` that is neither escaped nor, from the `strings_after`-th
    piece on, inside a double-quoted string; escapes kept."""
    pieces: list[str] = []
    start = i = 0
    quoted = False
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"' and strings_after is not None and len(pieces) >= strings_after:
            quoted = not quoted
        elif c == separator and not quoted:
            pieces.append(text[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise LineError("a string field is not closed")
    pieces.append(text[start:])
    return pieces


def _escaped_pair(text: str, what: str) -> tuple[str, str]:
    """key=value at the first "=" that is not escaped: the key unescaped, the value unescaped unless
    it is a string (whose escapes _value reads)."""
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "=":
            key, value = text[:i], text[i + 1 :]
            if not key or not value:
                break
            return _unescape(key), value if value.startswith('"') else _unescape(value)
        i += 1
    raise LineError(f"{what} {text!r} is not key=value")


def _unescape(text: str) -> str:
    return ESCAPED.sub(r"\1", text) if "\\" in text else text


def to_micros(timestamp: int, precision: str) -> int:
    per = PRECISIONS[precision]
    return timestamp // 1000 if per is None else timestamp * per


@dataclass(frozen=True)
class Readings:
    """A line's readings: its sensor and labels, (metric type, value) a field each, and its time (µs;
    None: the time of arrival)."""

    sensor_id: str
    labels: dict[str, str]
    values: list[tuple[str, float]]
    time_us: int | None


def sensor_of(tags: dict[str, str], sensor_tags: Sequence[str]) -> tuple[str, dict[str, str]]:
    """The sensor id (the first of the sensor tags the line has) and the labels (the other tags)."""
    sensor_tag = next((t for t in sensor_tags if t in tags), None)
    if sensor_tag is None:
        raise LineError(f"no sensor: the line has none of the tags {', '.join(sensor_tags)}")
    return tags[sensor_tag], {k: v for k, v in tags.items() if k != sensor_tag}


def metric_type(measurement: str, key: str) -> str:
    return measurement if key == "value" else f"{measurement}_{key}"


def number(key: str, value: float | int | bool | str) -> float:
    if isinstance(value, str):
        raise LineError(f"field {key!r} is a string: readings are numbers")
    return float(value)


def readings(line: Line, sensor_tags: Sequence[str], precision: str) -> Readings:
    """The line's readings, or LineError: none of them."""
    sensor_id, labels = sensor_of(line.tags, sensor_tags)
    values = [(metric_type(line.measurement, key), number(key, value)) for key, value in line.fields.items()]
    time_us = None if line.timestamp is None else to_micros(line.timestamp, precision)
    return Readings(sensor_id, labels, values, time_us)
