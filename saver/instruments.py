"""The saver's Prometheus series (consumer lag: runtime/consumer_lag.py)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from runtime.telemetry import LATENCY_BUCKETS

ROWS = Counter(
    "metrics_saver_rows_total",
    "Rows stored, by table (readings, events); a redelivered row already stored is not counted.",
    ("table",),
)
READING_ROWS = ROWS.labels("readings")
EVENT_ROWS = ROWS.labels("events")
TRANSACTION_SECONDS = Histogram(
    "metrics_saver_transaction_seconds", "One writer's transaction of a round.", buckets=LATENCY_BUCKETS
)
