"""The bridge's Prometheus series, and the brokers' own figures ($SYS) it passes on."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from runtime.telemetry import LATENCY_BUCKETS

MESSAGES = Counter("metrics_bridge_messages_total", "Messages taken from the brokers.", ("broker",))
READINGS = Counter("metrics_bridge_readings_total", "Readings of the messages written to Kafka.")
ACKNOWLEDGED = Counter(
    "metrics_bridge_acknowledged_total", "Messages acknowledged to the brokers (after Kafka had them)."
)
DEAD_LETTERED = Counter(
    "metrics_bridge_dead_lettered_total", "Messages dead-lettered: not readings, by reason.", ("reason",)
)
REDELIVERED = Counter(
    "metrics_bridge_redelivered_total",
    "Messages a broker sent again (DUP), and of those, how many got their first arrival stamp back.",
    ("stamp",),
)
ACK_SECONDS = Histogram(
    "metrics_bridge_ack_seconds",
    "From a message's arrival at the bridge to its acknowledgement to the broker (Kafka has it).",
    buckets=LATENCY_BUCKETS,
)
PRODUCE_SECONDS = Histogram(
    "metrics_bridge_kafka_produce_seconds",
    "From a record's send to Kafka's acknowledgement (a record holds the readings of many messages).",
    buckets=LATENCY_BUCKETS,
)
WRITES_RETRIED = Counter(
    "metrics_bridge_writes_retried_total",
    "A message's readings written again after Kafka refused or did not answer.",
)
IN_FLIGHT = Gauge("metrics_bridge_messages_in_flight", "Messages taken and not yet acknowledged.")
CONNECTED = Gauge(
    "metrics_bridge_broker_connected", "1 while the bridge is connected to the broker.", ("broker",)
)
# The broker's $SYS topics, as gauges: a figure per broker.
BROKER = Gauge("metrics_mqtt_broker", "The broker's own figures ($SYS), by name.", ("broker", "figure"))
