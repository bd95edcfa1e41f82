"""The saver's settings (see runtime/settings.py for how they are read)."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.kafka import ConsumerSettings
from runtime.settings import ServiceSettings, secret


@dataclass(frozen=True)
class SaverSettings(ConsumerSettings, ServiceSettings):
    grpc_port: int = 50053
    metrics_port: int = 51053
    kafka_username: str = "saver"
    # The data path: a role that may read and write the tables, not change them.
    postgres_dsn: str = secret("postgresql://metrics_writer@127.0.0.1:55432/metrics")
    postgres_password: str = secret("")
    # Migrations only, at start: the schema's owner.
    migrations_dsn: str = secret("postgresql://metrics@127.0.0.1:55432/metrics")
    migrations_password: str = secret("")
    consumer_group: str = "saver"
    # Most records written per transaction (a round also stops at 4 MB of records, runtime/kafka.py).
    max_records_per_round: int = 5_000
    # PostgreSQL connections writing each round, in parallel, split by partition.
    writers: int = 2
    # Fuller fetches (runtime/kafka.py): stored a little later, in fewer, larger transactions.
    fetch_min_bytes: int = 524288
    fetch_max_wait_ms: int = 100
