"""The assessor's settings (see runtime/settings.py for how they are read)."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.kafka import KafkaSettings
from runtime.settings import ServiceSettings, secret


@dataclass(frozen=True)
class AssessorSettings(KafkaSettings, ServiceSettings):
    grpc_port: int = 50054
    metrics_port: int = 51054
    # A role that can only read (the local stack's metrics_reader).
    postgres_dsn: str = secret("postgresql://metrics_reader@127.0.0.1:55432/metrics")
    # postgres_dsn's role's password (as a file: METRICS_ASSESSOR_POSTGRES_PASSWORD_FILE); empty: the DSN's.
    postgres_password: str = secret("")
    # Most connections open at once to the primary, and as many to the replica: queries run in parallel
    # up to this.
    postgres_pool_size: int = 10
    # A streaming replica to run the queries on (the same role, replicated); empty: none. Queries go
    # to the primary while it does not answer or is more than replica_max_lag_s behind.
    replica_dsn: str = secret("")
    # replica_dsn's role's password (as a file: METRICS_ASSESSOR_REPLICA_PASSWORD_FILE); empty: the DSN's.
    replica_password: str = secret("")
    # How far behind the primary the replica may be, in seconds, for queries to go to it.
    replica_max_lag_s: float = 5.0
    # Longest a query may run before the client gets DEADLINE_EXCEEDED.
    query_timeout_s: float = 10.0
    # Events a WatchEvents client may fall behind by before it is cut off.
    watch_queue_size: int = 1_000
    # A group's statistics over whole hours (AggregateSensors) read each hour's rollups once and keep
    # them; a kept hour is read again (in the background) once it was read this many seconds ago: how
    # late a reading of an hour that ended may show there.
    group_refresh_s: float = 60.0
    # Prometheus remote read (ReadPrometheus): the most stored series one query may match.
    remote_read_max_series: int = 10_000
    # The most samples one remote read answer may hold (Envoy passes an answer of up to 16 MB).
    remote_read_max_samples: int = 1_000_000
