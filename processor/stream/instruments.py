"""The processor's Prometheus series (consumer lag: runtime/consumer_lag.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from runtime.telemetry import LATENCY_BUCKETS

READINGS = Counter("metrics_processor_readings_total", "Readings taken from the metrics topic.")
EVENTS = Counter("metrics_processor_events_total", "Events produced to the events topic.")
ROUND_SECONDS = Histogram(
    "metrics_processor_round_seconds",
    "A round: from records in hand to their offsets committed (counters, events, commit).",
    buckets=LATENCY_BUCKETS,
)
# Tests and operators wait on it after a change of the rules (RulesService acknowledges a change
# once it is on the topic; each processor applies it from its next round on).
RULES_OFFSET = Gauge(
    "metrics_processor_rules_offset",
    "The rules topic's offset up to which the rules in force here are read (its next record's).",
)
