"""The notifier's Prometheus series (consumer lag: runtime/consumer_lag.py; calls of
SubscriptionsService: runtime/grpc_metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("metrics_notifier_events_total", "Events read from the events topic.")
QUEUED = Counter(
    "metrics_notifier_deliveries_queued_total",
    "Deliveries queued: events times the subscriptions they match.",
)
DELIVERIES = Counter(
    "metrics_notifier_deliveries_total",
    "Deliveries done, by outcome: delivered (a 2xx answer), dead_lettered (given up on with their "
    "subscription).",
    ("outcome",),
)
DELIVERED = DELIVERIES.labels("delivered")
DEAD_LETTERED = DELIVERIES.labels("dead_lettered")
ATTEMPTS_FAILED = Counter(
    "metrics_notifier_attempts_failed_total",
    "Attempts that did not deliver, by kind: status (an answer other than 2xx), timeout, connection "
    "(refused, reset, TLS), address (the URL's host resolves where the notifier may not go).",
    ("kind",),
)
RETRIES = Counter("metrics_notifier_retries_total", "Attempts after the first one of a delivery.")
# From seconds to an hour: a delivery that was retried is measured too.
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                    900.0, 3600.0)  # fmt: skip
DELIVERY_SECONDS = Histogram(
    "metrics_notifier_delivery_seconds",
    "From an event's detect_time (the processor raised it) to its delivery's 2xx answer.",
    buckets=DELIVERY_BUCKETS,
)
SUBSCRIPTIONS = Gauge(
    "metrics_notifier_subscriptions", "Subscriptions by delivery state (sampled).", ("state",)
)
PENDING = Gauge("metrics_notifier_pending_deliveries", "Deliveries waiting or to be tried again (sampled).")
IN_FLIGHT = Gauge("metrics_notifier_attempts_in_flight", "Attempts under way in this process.")
