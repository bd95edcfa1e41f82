"""The receiver's Prometheus series (its calls' are runtime/grpc_metrics.py's)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from runtime.errors import (
    DeadlineExceeded,
    InvalidArgument,
    PermissionDenied,
    RateLimited,
    ResourceExhausted,
    Unavailable,
)
from runtime.telemetry import LATENCY_BUCKETS

ACCEPTED = Counter(
    "metrics_receiver_readings_accepted_total", "Readings acknowledged to their sender: Kafka has them."
)
REFUSED = Counter(
    "metrics_receiver_readings_refused_total",
    "Readings refused, by reason (a request shed before it was read, or refused for its token's scope, "
    "counts in grpc_server_handled_total by its code only).",
    ("reason",),
)
STALE_MARKERS = Counter(
    "metrics_receiver_stale_markers_total",
    "Prometheus stale markers dropped by remote write: a series ended, not a value.",
)
ACK_SECONDS = Histogram(
    "metrics_receiver_ack_seconds",
    "From a batch's arrival to its acknowledgement (Kafka has it) or its refusal.",
    buckets=LATENCY_BUCKETS,
)
PRODUCE_SECONDS = Histogram(
    "metrics_receiver_kafka_produce_seconds",
    "From a record's send to Kafka's acknowledgement (a record holds the readings of many calls).",
    buckets=LATENCY_BUCKETS,
)
ADMISSION_WAIT_SECONDS = Histogram(
    "metrics_receiver_admission_wait_seconds",
    "How long batches that found no room waited for it (admitted or not).",
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "metrics_receiver_readings_in_flight",
    "Readings accepted and not yet acknowledged by Kafka.",
    multiprocess_mode="livesum",
)
WAITING = Gauge(
    "metrics_receiver_readings_waiting",
    "Readings waiting for room to be accepted.",
    multiprocess_mode="livesum",
)

# Most specific first: RateLimited is an Unavailable.
_REASONS = (
    (InvalidArgument, "invalid"),
    (PermissionDenied, "forbidden"),
    (RateLimited, "rate_limited"),
    (ResourceExhausted, "overloaded"),
    (DeadlineExceeded, "timeout"),
    (Unavailable, "unavailable"),
)
_REFUSED = {reason: REFUSED.labels(reason) for _, reason in (*_REASONS, (None, "error"))}


def refused(readings: int, exc: BaseException) -> None:
    reason = next((name for kind, name in _REASONS if isinstance(exc, kind)), "error")
    _REFUSED[reason].inc(readings)
