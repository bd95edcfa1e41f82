"""The processor's settings (see runtime/settings.py for how they are read)."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.kafka import KafkaSettings
from runtime.settings import ServiceSettings


@dataclass(frozen=True)
class ProcessorSettings(KafkaSettings, ServiceSettings):
    grpc_port: int = 50052
    redis_url: str = "redis://127.0.0.1:56379/0"
    # One rule per metric type, "type:threshold:count", e.g. "temperature:95:3,humidity:80:5".
    rules: tuple[str, ...] = ("temperature:95:3",)
    consumer_group: str = "processor"
    # Most records taken from Kafka per round; a round is one Redis script per partition.
    max_records_per_round: int = 2_000
    # Kafka answers a fetch once it has this many bytes or this many ms have passed: at a trickle
    # of small records a round is not a record or two (an alert waits at most this much longer).
    fetch_min_bytes: int = 65536
    fetch_max_wait_ms: int = 20
    # A partition whose rounds keep failing for this long while records wait is reported in the
    # log (once) and in the health (NOT_SERVING), until it flows again.
    stall_after_s: float = 30.0
