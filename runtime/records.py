"""What a consumer takes from a Kafka record, or why it cannot use it (the dead-letter reason).

Any producer can write to the topics, so the processor and the saver check every record as the
receiver checks a request: the message-type header, the encoding, the key, every field (the same
validation, runtime/validation.py). A record that fails is dead-lettered with the reason, and its
partition flows on; nothing a record holds can stall one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from aiokafka import ConsumerRecord
from google.protobuf.message import DecodeError

from metrics.v1 import event_pb2, metric_pb2
from runtime import kafka
from runtime.errors import Violation
from runtime.validation import FUTURE_SKEW_S, Checked, Limits, check_stored, event_violations

# Readings in one record: the receiver writes at most 10,000; a record with many more came from
# elsewhere and would hold a consumer's round (and memory) hostage.
LIMITS = Limits(max_batch_readings=kafka.MAX_RECORD_READINGS, max_future_skew_s=FUTURE_SKEW_S)
# A reason names at most this many problems of a record.
MAX_NAMED = 5

M = TypeVar("M", metric_pb2.MetricBatch, event_pb2.Event)


class Unusable(Exception):
    """A record no consumer can use; the message is the reason written with its dead letter, and
    `kind` the short reason its count goes by (metrics_dead_letters_total)."""

    def __init__(self, reason: str, kind: str = "invalid") -> None:
        super().__init__(reason)
        self.kind = kind


def read_metric_batch(
    record: ConsumerRecord[bytes, bytes], rows: list[Checked] | None = None
) -> metric_pb2.MetricBatch:
    """The readings of a record of the metrics topic; raises Unusable. Appends them to `rows` (if
    given) as they are checked: one pass over the readings, and nothing of a record refused."""
    _check_type(record, kafka.METRIC_BATCH_TYPE)
    batch = _decode(metric_pb2.MetricBatch, record)
    if len(batch.metrics) > kafka.MAX_RECORD_READINGS:
        raise Unusable(kafka.oversized(len(batch.metrics)), "oversized")
    checked: list[Checked] | None = [] if rows is not None else None
    sensors, violations = check_stored(batch.metrics, LIMITS, checked)
    _check(violations)
    if record.key is not None:
        key = record.key.decode(errors="replace")
        if sensors != {key}:
            raise Unusable(
                f"key {key[:140]!r} is not the sensor id of every reading "
                "(a record of several sensors has no key)",
                "wrong_key",
            )
    if rows is not None and checked is not None:
        rows += checked
    return batch


def checked(metrics: Sequence[metric_pb2.Metric]) -> list[Checked]:
    """Readings as a consumer keeps them, checked as it checks them (for tools and tests: the
    consumers check records with read_metric_batch); raises Unusable."""
    rows: list[Checked] = []
    _check(check_stored(metrics, LIMITS, rows)[1])
    return rows


def read_event(record: ConsumerRecord[bytes, bytes]) -> event_pb2.Event:
    """The event of a record of the events topic; raises Unusable."""
    _check_type(record, kafka.EVENT_TYPE)
    value = _decode(event_pb2.Event, record)
    _check(event_violations(value))
    return value


def _check_type(record: ConsumerRecord[bytes, bytes], expected: str) -> None:
    found = [v for k, v in record.headers or () if k == kafka.MESSAGE_TYPE_HEADER]
    if not found:
        raise Unusable(f"no {kafka.MESSAGE_TYPE_HEADER} header (expected {expected})", "wrong_type")
    if found[-1] != expected.encode():
        shown = found[-1][:100].decode(errors="replace")
        raise Unusable(f"{kafka.MESSAGE_TYPE_HEADER} is {shown!r}, not {expected}", "wrong_type")


def _decode(message_type: type[M], record: ConsumerRecord[bytes, bytes]) -> M:
    try:
        return message_type.FromString(record.value or b"")
    except DecodeError as exc:
        raise Unusable(f"value is not a {message_type.DESCRIPTOR.full_name}: {exc}", "undecodable") from None


def _check(violations: list[Violation]) -> None:
    if violations:
        named = "; ".join(f"{v.field}: {v.description}" for v in violations[:MAX_NAMED])
        more = f" (and {len(violations) - MAX_NAMED} more)" if len(violations) > MAX_NAMED else ""
        raise Unusable(named + more)
