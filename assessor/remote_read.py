"""Prometheus remote read over the stored readings (docs/prometheus.md): what a Prometheus with
`remote_read` to us asks when it answers PromQL.

A stored series (sensor, metric type) answers as one Prometheus series per set of labels its readings
carry: `__name__` the metric type, `sensor` the sensor id, and the labels. Prometheus takes only
names of [a-zA-Z_:][a-zA-Z0-9_:]*: a metric type's "." is "_" there (engine.rpm is engine_rpm), as
is any other character of a label's name it does not take; a label named like one of the two
(__name__, sensor) is exported_<name>, as Prometheus renames a scraped label that clashes.

Matchers on __name__ and sensor choose the stored series (in SQL, only those with a reading since the
query's start); the others are applied to each series' labels. The answer is encoded here rather than
built message by message: a day of one series at 1 Hz is 86,400 samples.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass

import asyncpg
import numpy as np

from assessor import readings
from metrics.v1 import prometheus_pb2 as ppb
from runtime import snappy, wire
from runtime.errors import InvalidArgument, Violation
from runtime.identity import Identity

NAME, SENSOR = "__name__", "sensor"
MAX_REQUEST_BYTES = 1024 * 1024  # a read request is matchers and times: a few hundred bytes
NOT_PROMETHEUS = re.compile(r"[^a-zA-Z0-9_]")
# The stored series whose latest reading is not before the start, by name and sensor ($1: the start
# in µs; the matchers' conditions follow).
CANDIDATES = "SELECT sensor_id, metric_type FROM latest_readings WHERE reading_time >= $1"
PROMETHEUS_NAME = "translate(metric_type, '.', '_')"
SQL_MATCH: dict[int, str] = {
    ppb.PROMETHEUS_MATCH_TYPE_EQUAL: "{} = ${}",
    ppb.PROMETHEUS_MATCH_TYPE_NOT_EQUAL: "{} <> ${}",
    ppb.PROMETHEUS_MATCH_TYPE_REGEX: "{} ~ ('^(?:' || ${} || ')$')",
    ppb.PROMETHEUS_MATCH_TYPE_NOT_REGEX: "{} !~ ('^(?:' || ${} || ')$')",
}
# A sample in a series: field 2 (a message of 16 bytes): field 1 (double), field 2 (varint, 6 bytes
# for any time from 1971 to 2109 in milliseconds, which is every stored one).
SAMPLE_BYTES = 18
EARLIEST_MS, LATEST_MS = 1 << 35, 1 << 42
# How many of a series' latest readings in the range say its label sets, when only those are asked.
SERIES_READINGS = 1_000


@dataclass(frozen=True)
class Limits:
    max_series: int
    max_samples: int


@dataclass(frozen=True)
class Matcher:
    name: str
    type: int
    value: str
    pattern: re.Pattern[str] | None

    def matches(self, value: str) -> bool:
        if self.pattern is not None:
            found = self.pattern.fullmatch(value) is not None
            return found if self.type == ppb.PROMETHEUS_MATCH_TYPE_REGEX else not found
        equal = value == self.value
        return equal if self.type == ppb.PROMETHEUS_MATCH_TYPE_EQUAL else not equal


def request_of(body: bytes) -> ppb.PrometheusReadRequest:
    request = ppb.PrometheusReadRequest()
    try:
        request.ParseFromString(snappy.decompress(body, MAX_REQUEST_BYTES))
    except snappy.SnappyError as why:
        raise InvalidArgument([Violation("body", str(why))]) from None
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, whatever its module
        raise InvalidArgument([Violation("body", f"is not a Prometheus ReadRequest: {exc}")]) from None
    types = request.accepted_response_types
    if types and ppb.PROMETHEUS_READ_RESPONSE_TYPE_SAMPLES not in types:
        problem = "only SAMPLES is answered (streamed chunks are not)"
        raise InvalidArgument([Violation("accepted_response_types", problem)])
    return request


async def answer(
    pool: asyncpg.Pool, request: ppb.PrometheusReadRequest, caller: Identity | None, limits: Limits
) -> bytes:
    """The snappy-compressed PrometheusReadResponse: a result per query."""
    budget = [limits.max_samples]
    results = []
    for i, query in enumerate(request.queries):
        results.append(await _result(pool, query, f"queries[{i}]", caller, limits, budget))
    return snappy.compress(b"".join(wire.field(1, r) for r in results))


async def _result(
    pool: asyncpg.Pool, query: ppb.PrometheusQuery, field: str, caller: Identity | None, limits: Limits,
    budget: list[int],
) -> bytes:  # fmt: skip
    matchers = _matchers(query, field)
    # Prometheus asks for all time as the least and most int64 milliseconds (its series API).
    start_us = max(query.start_timestamp_ms, 0) * 1000
    end_us = (min(query.end_timestamp_ms, LATEST_MS - 1) + 1) * 1000
    if query.end_timestamp_ms < query.start_timestamp_ms:
        raise InvalidArgument(
            [Violation(f"{field}.end_timestamp_ms", "must not be before start_timestamp_ms")]
        )
    sql = CANDIDATES
    args: list[object] = [start_us]
    for m in matchers:
        column = {NAME: PROMETHEUS_NAME, SENSOR: "sensor_id"}.get(m.name)
        if column is not None:
            args.append(m.value)
            sql += " AND " + SQL_MATCH[m.type].format(column, len(args))
    sql += f" ORDER BY sensor_id, metric_type LIMIT {limits.max_series + 1}"
    try:
        candidates = [(r["sensor_id"], r["metric_type"]) for r in await pool.fetch(sql, *args)]
    except asyncpg.InvalidRegularExpressionError as exc:
        raise InvalidArgument(
            [Violation(f"{field}.matchers", f"a regular expression PostgreSQL cannot use: {exc}")]
        ) from None
    if caller is not None and not caller.all_sensors:
        candidates = [c for c in candidates if caller.covers(c[0])]
    if len(candidates) > limits.max_series:
        raise InvalidArgument([Violation(field, f"matches more than {limits.max_series:,} stored series: "
                                                "narrow its matchers")])  # fmt: skip
    others = [m for m in matchers if m.name not in (NAME, SENSOR)]
    # Prometheus's series and label APIs want the series, not their samples: their labels are read
    # off each series' latest readings.
    labels_only = query.hints.func == "series"
    newest = SERIES_READINGS if labels_only else None
    windows = await asyncio.gather(*(
        readings.window(pool, sensor, metric_type, start_us, end_us, newest, newest_first=labels_only)
        for sensor, metric_type in candidates
    ))  # fmt: skip
    encoded = []
    for (sensor, metric_type), window in zip(candidates, windows, strict=True):
        for labels, times_us, values in _by_labels(sensor, metric_type, window):
            if not all(m.matches(labels.get(m.name, "")) for m in others):
                continue
            kept = 0 if labels_only else len(times_us)
            budget[0] -= kept
            if budget[0] < 0:
                problem = f"selects more than {limits.max_samples:,} samples: ask for a shorter range"
                raise InvalidArgument([Violation(field, problem + " or fewer series")])
            encoded.append(wire.field(1, _series(labels, times_us[:kept] // 1000, values[:kept])))
    return b"".join(encoded)


def _matchers(query: ppb.PrometheusQuery, field: str) -> list[Matcher]:
    found = []
    for j, m in enumerate(query.matchers):
        pattern = None
        if m.type in (ppb.PROMETHEUS_MATCH_TYPE_REGEX, ppb.PROMETHEUS_MATCH_TYPE_NOT_REGEX):
            try:
                pattern = re.compile(m.value)
            except re.error as exc:
                raise InvalidArgument(
                    [Violation(f"{field}.matchers[{j}].value", f"is not a regular expression: {exc}")]
                ) from None
        elif m.type not in SQL_MATCH:
            raise InvalidArgument([Violation(f"{field}.matchers[{j}].type", f"unknown type {m.type}")])
        if "\x00" in m.value:
            raise InvalidArgument([Violation(f"{field}.matchers[{j}].value", "must not contain NUL")])
        found.append(Matcher(m.name, m.type, m.value, pattern))
    return found


def _by_labels(
    sensor: str, metric_type: str, window: readings.Window
) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    """The window's readings as Prometheus series: one per distinct set of labels."""
    if not len(window):
        return []
    kinds = set(window.labels)
    if len(kinds) == 1:
        return [(_labels(sensor, metric_type, window.labels[0]), window.times, window.values)]
    index = {kind: i for i, kind in enumerate(kinds)}
    keys = np.fromiter((index[k] for k in window.labels), np.int64, len(window))
    found = []
    for kind, i in index.items():
        chosen = keys == i
        found.append((_labels(sensor, metric_type, kind), window.times[chosen], window.values[chosen]))
    return found


def _labels(sensor: str, metric_type: str, labels_json: str | None) -> dict[str, str]:
    labels = {NAME: metric_type.replace(".", "_"), SENSOR: sensor}
    for key, value in (json.loads(labels_json) if labels_json else {}).items():
        name = NOT_PROMETHEUS.sub("_", key)
        if name[0].isdigit():
            name = "_" + name
        if name in (NAME, SENSOR):
            name = f"exported_{name.strip('_')}"
        labels[name] = value
    return labels


def _series(labels: dict[str, str], times_ms: np.ndarray, values: np.ndarray) -> bytes:
    """A PrometheusTimeSeries: its labels (sorted by name) through protobuf, its samples by numpy."""
    head = ppb.PrometheusTimeSeries(
        labels=[ppb.PrometheusLabel(name=k, value=labels[k]) for k in sorted(labels)]
    ).SerializeToString()
    n = len(times_ms)
    if n and (times_ms.min() < EARLIEST_MS or times_ms.max() >= LATEST_MS):
        pairs = zip(times_ms.tolist(), values.tolist(), strict=True)
        samples = [ppb.PrometheusSample(value=v, timestamp=t) for t, v in pairs]
        return head + ppb.PrometheusTimeSeries(samples=samples).SerializeToString()
    out = np.empty((n, SAMPLE_BYTES), np.uint8)
    out[:, 0], out[:, 1], out[:, 2], out[:, 11] = 0x12, 16, 0x09, 0x10
    out[:, 3:11] = values.astype("<f8").view(np.uint8).reshape(n, 8)
    t = times_ms.astype(np.uint64)
    for i in range(6):
        out[:, 12 + i] = ((t >> np.uint64(7 * i)) & np.uint64(0x7F)) | np.uint64(0x80 if i < 5 else 0)
    return head + out.tobytes()
