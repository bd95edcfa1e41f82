"""The saver's settings (see runtime/settings.py for how they are read)."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.kafka import KafkaSettings
from runtime.settings import ServiceSettings, secret


@dataclass(frozen=True)
class SaverSettings(KafkaSettings, ServiceSettings):
    grpc_port: int = 50053
    postgres_dsn: str = secret("postgresql://metrics@127.0.0.1:55432/metrics")
    consumer_group: str = "saver"
    # Most records written per transaction (a round also stops at 4 MB of records, runtime/kafka.py).
    max_records_per_round: int = 5_000
    # PostgreSQL connections writing each round, in parallel, split by partition.
    writers: int = 2
    # Kafka answers a fetch once it has this many bytes or this many ms have passed: at a trickle
    # of small records a round is not a record or two (stored a little later, in fewer, larger transactions).
    fetch_min_bytes: int = 524288
    fetch_max_wait_ms: int = 100
    # A partition whose rounds keep failing for this long while records wait is reported in the
    # log (once) and in the health (NOT_SERVING), until it flows again.
    stall_after_s: float = 30.0
