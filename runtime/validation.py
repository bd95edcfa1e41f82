"""Validation of readings and events: every problem, each naming its field.

The receiver checks what clients send before anything is written; the processor and the saver
check what they read from Kafka the same way (runtime/records.py), since any producer can write
there.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from metrics.v1 import event_pb2, metric_pb2
from runtime.errors import InvalidArgument, Violation

# The original system's routes (POST and GET /api/v1/sensors/{uuid}/...) carry temperatures only.
LEGACY_METRIC_TYPE = "temperature"

SENSOR_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
METRIC_TYPE = re.compile(r"[a-z][a-z0-9_.]{0,63}")
MAX_UNIT = 32
MAX_LABELS = 16
MAX_LABEL_KEY = 64
MAX_LABEL_VALUE = 256
# A batch with many bad readings is reported by its first problems, not all of them.
MAX_VIOLATIONS = 50
NANOS = 1_000_000_000
# 2000-01-01T00:00:00Z. Earlier times come from sensor clocks that were never set (an empty JSON
# timestamp, {}, is 1970-01-01 too): refused, rather than stored decades off.
EARLIEST_SECONDS = 946_684_800
# PostgreSQL text and jsonb cannot hold U+0000: a stored reading with it would fail its saver's round
# again and again, so the receiver refuses it.
NUL = "\x00"
NUL_PROBLEM = "must not contain the NUL character (\\x00)"
# Statistics keep the sum of the squares of the values in a double: a larger value's square would
# overflow it, and PostgreSQL would refuse every transaction holding that reading.
MAX_ABS_VALUE = 1e150
# How far ahead of this machine's clock a reading's time may be, by default.
FUTURE_SKEW_S = 300.0


# A reading as the consumers keep it once checked: sensor id, metric type, time (µs since 1970),
# value, unit (None for none), labels as their canonical JSON (labels_key; None for none).
Checked = tuple[str, str, int, float, str | None, str | None]


@dataclass(frozen=True)
class Limits:
    max_batch_readings: int
    max_future_skew_s: float
    metric_types: frozenset[str] = frozenset()


class ArrivalClock:
    """Arrival times for readings without one: strictly increasing microseconds (the resolution of
    stored times), so two readings of one sensor arriving together never collapse into one row.

    Of `workers` receiver processes, worker `index` takes only the microseconds that are `index`
    modulo `workers`: two processes never give the same time, whichever gets a sensor's calls.
    """

    def __init__(self, index: int = 0, workers: int = 1) -> None:
        self._index = index
        self._workers = workers
        self._last_us = index - workers

    def next_nanos(self) -> int:
        now_us = time.time_ns() // 1000
        now_us += (self._index - now_us) % self._workers  # the next microsecond that is this worker's
        self._last_us = max(now_us, self._last_us + self._workers)
        return self._last_us * 1000

    def reserve(self, count: int) -> tuple[int, int]:
        """`count` arrival times at once, as (first µs, step): first + i * step for i < count, each
        this clock's alone (a message's readings stamped together, and again alike if it comes back)."""
        first = self.next_nanos() // 1000
        self._last_us += (count - 1) * self._workers
        return first, self._workers


def check_batch(
    metrics: Sequence[metric_pb2.Metric], limits: Limits, clock: ArrivalClock, field: str = "metrics"
) -> set[str]:
    """Raises InvalidArgument naming every problem; else sets missing reading times to arrival time
    and returns the batch's sensor ids."""
    if not metrics:
        raise InvalidArgument([Violation(field, "at least one reading is required")])
    if len(metrics) > limits.max_batch_readings:
        raise InvalidArgument(
            [Violation(field, f"{len(metrics)} readings, more than the limit of {limits.max_batch_readings}")]
        )
    latest = time.time_ns() + int(limits.max_future_skew_s * NANOS)
    sensors, missing = _quick_check(metrics, limits, latest)
    if sensors is None:
        raise InvalidArgument(_violations(metrics, limits, latest, field))
    for metric in missing:
        metric.reading_time.FromNanoseconds(clock.next_nanos())
    return sensors


def _quick_check(
    metrics: Sequence[metric_pb2.Metric], limits: Limits, latest_nanos: int, rows: list[Checked] | None = None
) -> tuple[set[str] | None, list[metric_pb2.Metric]]:
    """(sensor ids, readings without a time) of a valid batch, or (None, []) if anything is wrong;
    appends each reading with a time, as Checked, to `rows` if given (what is appended before a
    problem is found is the caller's to drop).

    The common case in as little Python per reading as possible: ids and types are checked once
    per distinct value, the rest per reading; `_violations` says what is wrong, when something is.
    """
    sensors: set[str] = set()
    types: set[str] = set()
    missing: list[metric_pb2.Metric] = []
    latest_seconds = latest_nanos // NANOS
    for m in metrics:
        sensor_id, metric_type, value = m.sensor_id, m.metric_type, m.value
        sensors.add(sensor_id)
        types.add(metric_type)
        if not -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:  # also NaN and the infinities
            return None, []
        unit, labels = m.unit, m.labels
        if (unit and (len(unit) > MAX_UNIT or NUL in unit)) or (labels and label_problems(labels)):
            return None, []
        t = m.reading_time  # an empty one when absent: asked only then (each costs 0.2 µs)
        seconds, nanos = t.seconds, t.nanos
        if seconds < EARLIEST_SECONDS or not 0 <= nanos < NANOS:
            if m.HasField("reading_time"):
                return None, []
            missing.append(m)
            continue
        if seconds >= latest_seconds and seconds * NANOS + nanos > latest_nanos:
            return None, []
        if rows is not None:
            time_us = seconds * 1_000_000 + nanos // 1000
            rows.append((sensor_id, metric_type, time_us, value, unit or None, labels_key(labels)))
    if not all(SENSOR_ID.fullmatch(s) for s in sensors) or not all(METRIC_TYPE.fullmatch(t) for t in types):
        return None, []
    if limits.metric_types and not types <= limits.metric_types:
        return None, []
    return sensors, missing


def labels_key(labels: Mapping[str, str]) -> str | None:
    """Labels as one text (keys in order, no spaces): what a saver keys their attributes by. None
    for none."""
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":")) if labels else None


def _violations(
    metrics: Sequence[metric_pb2.Metric], limits: Limits, latest_nanos: int, field: str
) -> list[Violation]:
    violations: list[Violation] = []
    for i, metric in enumerate(metrics):
        problems = check_metric(metric, limits, latest_nanos)
        violations.extend(Violation(f"{field}[{i}].{name}", text) for name, text in problems)
        if len(violations) >= MAX_VIOLATIONS:
            break
    assert violations, "the quick check and the full check disagree"
    return violations[:MAX_VIOLATIONS]


def check_metric(metric: metric_pb2.Metric, limits: Limits, latest_nanos: int) -> list[tuple[str, str]]:
    """The problems of one reading as (field, description) pairs; empty when it is valid."""
    problems: list[tuple[str, str]] = []
    sensor_id = metric.sensor_id
    if SENSOR_ID.fullmatch(sensor_id) is None:
        problems.append(("sensor_id", describe_id(sensor_id, 128, "A-Z a-z 0-9 . _ : -")))
    metric_type = metric.metric_type
    if METRIC_TYPE.fullmatch(metric_type) is None:
        problems.append(("metric_type", _describe_type(metric_type)))
    elif limits.metric_types and metric_type not in limits.metric_types:
        known = ", ".join(sorted(limits.metric_types))
        problems.append(("metric_type", f"unknown metric type {metric_type!r}; known types: {known}"))
    if not math.isfinite(metric.value):
        problems.append(("value", f"must be a finite number, got {metric.value}"))
    elif abs(metric.value) > MAX_ABS_VALUE:
        problems.append(
            ("value", f"must be within ±{MAX_ABS_VALUE:g} (statistics sum its square), got {metric.value:g}")
        )
    if metric.HasField("reading_time"):
        problem = _check_time(metric.reading_time.seconds, metric.reading_time.nanos, latest_nanos)
        if problem:
            problems.append(("reading_time", problem))
    if len(metric.unit) > MAX_UNIT:
        problems.append(("unit", f"is {len(metric.unit)} characters, more than {MAX_UNIT}"))
    elif NUL in metric.unit:
        problems.append(("unit", NUL_PROBLEM))
    if metric.labels:
        problems.extend(label_problems(metric.labels))
    return problems


def describe_id(value: str, limit: int, allowed: str) -> str:
    """What is wrong with an id that does not match its pattern."""
    if not value:
        return "is required"
    if len(value) > limit:
        return f"is {len(value)} characters, more than {limit}"
    return f"{_quote(value)} has characters other than {allowed}"


def _describe_type(value: str) -> str:
    if not value:
        return "is required"
    if len(value) > 64:
        return f"is {len(value)} characters, more than 64"
    return f"{_quote(value)} is not a metric type: a lower-case letter, then a-z 0-9 _ ."


def _check_time(seconds: int, nanos: int, latest_nanos: int) -> str | None:
    if not 0 <= nanos < NANOS:
        return f"nanos must be in [0, 999999999], got {nanos}"
    if seconds < EARLIEST_SECONDS:
        return "is before 2000-01-01T00:00:00Z (a sensor clock that was never set?)"
    at = seconds * NANOS + nanos
    if at > latest_nanos:
        ahead = (at - latest_nanos) / NANOS
        return f"is in the future (more than the allowed clock skew, by {ahead:.0f} s)"
    return None


def label_problems(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """The problems of labels (a reading's, a device's) as (field, description) pairs."""
    problems: list[tuple[str, str]] = []
    if len(labels) > MAX_LABELS:
        problems.append(("labels", f"has {len(labels)} entries, more than {MAX_LABELS}"))
    for key, value in labels.items():
        if not key or len(key) > MAX_LABEL_KEY:
            problems.append(
                (f"labels[{_quote(key[:MAX_LABEL_KEY])}]", f"key must be 1 to {MAX_LABEL_KEY} characters")
            )
        if len(value) > MAX_LABEL_VALUE:
            problems.append(
                (f"labels[{_quote(key[:MAX_LABEL_KEY])}]", f"value is more than {MAX_LABEL_VALUE} characters")
            )
        if NUL in key or NUL in value:
            problems.append((f"labels[{_quote(key[:MAX_LABEL_KEY])}]", NUL_PROBLEM))
    return problems


def _quote(value: str, limit: int = 40) -> str:
    """A value for an error message: escaped, and cut when long."""
    shown = value if len(value) <= limit else value[:limit] + "…"
    return repr(shown)


def check_stored(
    metrics: Sequence[metric_pb2.Metric], limits: Limits, rows: list[Checked] | None = None
) -> tuple[set[str], list[Violation]]:
    """(sensor ids, problems) of readings read from Kafka: the problems check_batch finds, and a
    missing time (the receiver sets every reading's time; without one, each consumer would make up
    its own). The sensor ids are those of a batch without problems; only such a batch's readings are
    appended to `rows` (if given), in the same pass. The caller bounds how many readings there are
    (runtime/records.py: an oversized record is refused before this)."""
    if not metrics:
        return set(), [Violation("metrics", "at least one reading is required")]
    latest = time.time_ns() + int(limits.max_future_skew_s * NANOS)
    checked: list[Checked] | None = [] if rows is not None else None
    sensors, missing = _quick_check(metrics, limits, latest, checked)
    if sensors is not None and not missing:
        if rows is not None and checked is not None:
            rows += checked
        return sensors, []
    violations = [] if sensors is not None else _violations(metrics, limits, latest, "metrics")
    violations += [
        Violation(f"metrics[{i}].reading_time", "is required")
        for i, m in enumerate(metrics)
        if not m.HasField("reading_time")
    ]
    return set(), violations[:MAX_VIOLATIONS]


# The events of an alarm's changes after its raise.
ALARM_CHANGES = (event_pb2.EVENT_KIND_ALARM_CLEARED, event_pb2.EVENT_KIND_ALARM_ACKNOWLEDGED)


def event_violations(event: event_pb2.Event, max_future_skew_s: float = FUTURE_SKEW_S) -> list[Violation]:
    """The problems of an event read from Kafka: what PostgreSQL or a reader could not take. An
    event of a silent device's alarm (raised, cleared, acknowledged) has no metric type."""
    silence = event.kind == event_pb2.EVENT_KIND_DEVICE_SILENT or (
        event.kind in ALARM_CHANGES and event.alarm_id and not event.metric_type
    )
    violations = [
        Violation(f"event.{name}", text)
        for name, text in check_metric(
            metric_pb2.Metric(
                sensor_id=event.sensor_id,
                metric_type=event.metric_type,
                value=event.value,
                reading_time=event.reading_time,
            ),
            Limits(1, max_future_skew_s),
            time.time_ns() + int(max_future_skew_s * NANOS),
        )
        if not (silence and name == "metric_type" and not event.metric_type)
    ]
    try:
        uuid.UUID(event.event_id)
    except ValueError:
        violations.append(Violation("event.event_id", f"{_quote(event.event_id)} is not a UUID"))
    if not event.HasField("reading_time"):
        violations.append(Violation("event.reading_time", "is required"))
    if not event.HasField("detect_time"):
        violations.append(Violation("event.detect_time", "is required"))
    elif problem := _check_time(
        event.detect_time.seconds, event.detect_time.nanos, time.time_ns() + int(max_future_skew_s * NANOS)
    ):
        violations.append(Violation("event.detect_time", problem))
    if event.kind not in event_pb2.EventKind.values() or event.kind == event_pb2.EVENT_KIND_UNSPECIFIED:
        violations.append(Violation("event.kind", f"{event.kind} is not a known kind of event"))
    if not math.isfinite(event.threshold):
        violations.append(Violation("event.threshold", f"must be a finite number, got {event.threshold}"))
    return violations
