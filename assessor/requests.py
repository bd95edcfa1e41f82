"""Checks of query requests: time ranges and required fields, each problem naming its field."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from runtime.errors import InvalidArgument, Violation

MAX_RANGE_US = 400 * 24 * 3600 * 1_000_000  # a little over a year


def time_range(
    has_start: bool, start: timestamp_pb2.Timestamp, has_end: bool, end: timestamp_pb2.Timestamp
) -> tuple[int, int]:
    """[start, end) in microseconds; raises unless both are set and start < end."""
    violations = []
    if not has_start:
        violations.append(Violation("start_time", "is required"))
    if not has_end:
        violations.append(Violation("end_time", "is required"))
    if violations:
        raise InvalidArgument(violations)
    start_us, end_us = start.ToMicroseconds(), end.ToMicroseconds()
    if end_us <= start_us:
        raise InvalidArgument(
            [
                Violation(
                    "end_time", f"must be after start_time ({end.ToJsonString()} <= {start.ToJsonString()})"
                )
            ]
        )
    if end_us - start_us > MAX_RANGE_US:
        raise InvalidArgument([Violation("end_time", "the range is longer than 400 days")])
    return start_us, end_us


def required(**fields: str) -> None:
    missing = [Violation(name, "is required") for name, value in fields.items() if not value]
    if missing:
        raise InvalidArgument(missing)


def text(**fields: str) -> None:
    """Text the database cannot hold (U+0000) cannot match anything stored: it is refused."""
    bad = [
        Violation(name, "must not contain the NUL character (\\x00)")
        for name, value in fields.items()
        if "\x00" in value
    ]
    if bad:
        raise InvalidArgument(bad)
