"""The bridge's settings (see runtime/settings.py for how they are read)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.kafka import KafkaSettings
from runtime.settings import ServiceSettings, secret


@dataclass(frozen=True)
class BridgeSettings(KafkaSettings, ServiceSettings):
    grpc_port: int = 50056
    metrics_port: int = 51056
    kafka_username: str = "bridge"
    # The MQTT brokers' listeners for the services, "host:port" comma-separated: the bridge subscribes
    # to each (Mosquitto has no clustering: devices are given every broker, and each bridge reads all).
    brokers: tuple[str, ...] = ("127.0.0.1:1884",)
    # The bridges' account at the brokers.
    mqtt_username: str = "bridge"
    # mqtt_username's password (as a file: METRICS_BRIDGE_MQTT_PASSWORD_FILE).
    mqtt_password: str = secret("")
    # This bridge's session at the brokers, which keep its messages while it is away: one name per
    # bridge, the same after each restart (so that what it had not acknowledged comes back to it).
    client_id: str = "bridge-1"
    # How long a broker keeps the session of a bridge that is away, in seconds.
    session_expiry_s: int = 86_400
    # The shared subscription's group: each message goes to one of the bridges in it.
    shared_group: str = "bridges"
    # Messages a broker sends before it has their acknowledgements (MQTT 5 receive maximum): the
    # bridge's work in flight, each waiting for Kafka.
    receive_maximum: int = 1_000
    # Of `arrival_slots` bridges, this one's share of the microseconds for arrival times (those equal
    # to arrival_slot modulo arrival_slots): the messages of one sensor, spread over the bridges,
    # never get the same time.
    arrival_slot: int = 0
    # How many bridges share the microseconds (see arrival_slot).
    arrival_slots: int = 1
    # Where the bridge keeps its arrival stamps (bridge/stamps.py): a file per client_id and broker.
    state_dir: Path = Path(".stack/bridge")
    # Largest payload taken; a larger one is dead-lettered.
    max_payload_bytes: int = 1024 * 1024
    # Largest batch (a MetricBatch payload's readings).
    max_batch_readings: int = 10_000
    # Readings more than this far in the future are refused (sensor clocks drift, but not by hours).
    max_future_skew_s: float = 300.0
    # When not empty, the only metric types accepted, e.g. "temperature,humidity".
    metric_types: tuple[str, ...] = ()
    # Strict mode: readings of sensors that no enabled registered device covers are dead-lettered
    # (runtime/devices.py). Off for the local stack; on in the compose file's production settings.
    require_registered_devices: bool = False
    # How long Kafka gets to acknowledge a record before the bridge writes it again (a message is
    # acknowledged to the broker only once Kafka has its readings).
    kafka_ack_timeout_s: float = 5.0
    # How long the bridge collects messages before it hands them to the writer together: per message,
    # the writing and Kafka's produce requests cost a share of one. A device has its PUBACK from the
    # broker already; the readings reach Kafka this much later at most.
    batch_ms: float = 20.0
    # How long an idle partition's lane waits for more readings before it writes a record
    # (runtime/writer.py).
    linger_ms: float = 5.0
