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
    # Migrations (at start) and the history's partitions (saver/history.py): the schema's owner.
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
    # How long history is kept, in days (0: forever); see README "History and retention". Raw
    # readings: by default, and per metric type ("type:days", e.g. "vibration:7,energy:730").
    readings_retention_days: int = 90
    readings_retention_by_type: tuple[str, ...] = ()
    # Rollups (statistics over expired days read them): at least as long as any raw readings.
    rollups_retention_days: int = 1095
    events_retention_days: int = 1095
    # Day partitions of readings made this many days ahead, and how often the history is kept up.
    partitions_ahead_days: int = 7
    history_interval_s: float = 3600.0
