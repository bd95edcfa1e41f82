"""The saver's settings (see runtime/settings.py for how they are read)."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.kafka import ConsumerSettings
from runtime.migrations import MigrationSettings
from runtime.settings import ServiceSettings, secret


@dataclass(frozen=True)
class SaverSettings(MigrationSettings, ConsumerSettings, ServiceSettings):
    grpc_port: int = 50053
    metrics_port: int = 51053
    kafka_username: str = "saver"
    # The data path: a role that may read and write the tables, not change them.
    postgres_dsn: str = secret("postgresql://metrics_writer@127.0.0.1:55432/metrics")
    # postgres_dsn's role's password (as a file: METRICS_SAVER_POSTGRES_PASSWORD_FILE); empty: the DSN's.
    postgres_password: str = secret("")
    # The consumer group of the metrics and events topics: the savers share their partitions.
    consumer_group: str = "saver"
    # Most records written per transaction (a round also stops at 4 MB of records, runtime/kafka.py).
    max_records_per_round: int = 5_000
    # PostgreSQL connections writing each round, in parallel, split by partition.
    writers: int = 2
    # Kafka answers a fetch once it has this many bytes, or after fetch_max_wait_ms: fuller fetches
    # (runtime/kafka.py), so readings are stored a little later, in fewer, larger transactions.
    fetch_min_bytes: int = 524288
    # The longest Kafka holds a fetch waiting for fetch_min_bytes, in ms.
    fetch_max_wait_ms: int = 100
    # How long raw readings are kept, in days (0: forever); see docs/operations.md, History and retention.
    readings_retention_days: int = 90
    # How long raw readings of some metric types are kept instead, "type:days" (0 days: forever),
    # e.g. "vibration:7,energy:730".
    readings_retention_by_type: tuple[str, ...] = ()
    # How long rollups are kept, in days (0: forever); statistics over expired days read them, so at
    # least as long as any raw readings.
    rollups_retention_days: int = 1095
    # How long events (and cleared alarms) are kept, in days (0: forever).
    events_retention_days: int = 1095
    # Day partitions of readings are made this many days ahead.
    partitions_ahead_days: int = 7
    # How often the history is kept up (partitions made ahead, expired ones dropped), in seconds.
    history_interval_s: float = 3600.0
    # An hour's raw readings are packed (saver/compaction.py) once it ended this long ago, and
    # readings stored into a packed hour this long after the last of them, in seconds.
    compaction_grace_s: float = 600.0
    # How often compaction looks for closed hours, in seconds.
    compaction_interval_s: float = 60.0
