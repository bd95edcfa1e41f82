"""The receiver's settings (see runtime/settings.py for how they are read)."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.kafka import KafkaSettings
from runtime.settings import ServiceSettings


@dataclass(frozen=True)
class ReceiverSettings(KafkaSettings, ServiceSettings):
    grpc_port: int = 50051
    metrics_port: int = 51051
    kafka_username: str = "receiver"
    # Processes sharing the port (SO_REUSEPORT); 0 = one per CPU core. Python's per-call work is
    # what limits one-reading calls, and one process uses one core.
    workers: int = 0
    # Largest batch accepted in one request or stream message.
    max_batch_readings: int = 10_000
    # Largest request message: a full batch at the size limits of every field (~53 MB) fits.
    max_message_bytes: int = 64 * 1024 * 1024
    # Readings more than this far in the future are rejected (sensor clocks drift, but not by hours).
    max_future_skew_s: float = 300.0
    # When not empty, the only metric types accepted, e.g. "temperature,humidity".
    metric_types: tuple[str, ...] = ()
    # Strict mode: readings of sensors that no enabled registered device covers are refused
    # (runtime/devices.py). Off for the local stack; on in the compose file's production settings.
    require_registered_devices: bool = False
    # Readings accepted but not yet acknowledged by Kafka, over all clients (as many more may wait
    # up to admission_wait_s for room).
    max_in_flight_readings: int = 100_000
    # How long a request waits for room under that bound before RESOURCE_EXHAUSTED.
    admission_wait_s: float = 1.0
    # How long an idle partition's lane waits for more readings before it writes a record
    # (runtime/writer.py): fewer, larger records for Kafka, the processor and the saver.
    linger_ms: float = 5.0
    # How long Kafka gets to acknowledge a batch before the client is told UNAVAILABLE.
    kafka_ack_timeout_s: float = 5.0
    # Line protocol (WriteLineProtocol): the tags that name a line's sensor, the first the line has
    # (commas); its other tags are the readings' labels.
    line_protocol_sensor_tags: tuple[str, ...] = ("sensor", "host")
    # Prometheus remote write (WritePrometheus): the labels that name a series' sensor, the first the
    # series has (commas); its other labels (but __name__, the metric type) are the readings' labels.
    prometheus_sensor_labels: tuple[str, ...] = ("sensor", "instance")
    # The most bytes a remote write body may decompress to (Prometheus sends 2,000 samples a request,
    # ~0.2 MB; vmagent up to 10,000 series).
    remote_write_max_bytes: int = 32 * 1024 * 1024
