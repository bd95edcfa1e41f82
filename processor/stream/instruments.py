"""The processor's Prometheus series (consumer lag: runtime/consumer_lag.py)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from runtime.telemetry import LATENCY_BUCKETS

READINGS = Counter("metrics_processor_readings_total", "Readings taken from the metrics topic.")
EVENTS = Counter("metrics_processor_events_total", "Events produced to the events topic.")
ROUND_SECONDS = Histogram(
    "metrics_processor_round_seconds",
    "A round: from records in hand to their offsets committed (counters, events, commit).",
    buckets=LATENCY_BUCKETS,
)
