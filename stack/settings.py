"""Ports and places of the local stack; METRICS_<NAME> environment variables override them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from runtime import settings

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("receiver", "processor", "saver", "assessor", "notifier")
# Those Envoy routes to (the processor for its RulesService); the saver's health stays inside.
PUBLIC_SERVICES = ("receiver", "processor", "assessor", "notifier")


@dataclass(frozen=True)
class StackSettings:
    # The front door: TLS with tokens (to expose), and plaintext without (loopback, development;
    # METRICS_ENVOY_PLAINTEXT=off switches it off).
    envoy_tls_port: int = 8443
    envoy_port: int = 8080
    envoy_plaintext: bool = True
    envoy_admin_port: int = 9901
    # The TLS listener's certificate and key (PEM); unset, `make run` makes a local CA and a
    # certificate it signs, in <state_dir>/tls.
    tls_certificate_file: Path | None = None
    tls_private_key_file: Path | None = None
    # The CA of device certificates (mutual TLS instead of a token); unset: the local CA when the
    # certificate is the local one, else no device certificates.
    tls_client_ca_file: Path | None = None
    postgres_port: int = 55432
    redis_port: int = 56379
    kafka_port: int = 59092
    kafka_controller_port: int = 59093
    receiver_grpc_port: int = 50051
    processor_grpc_port: int = 50052
    saver_grpc_port: int = 50053
    assessor_grpc_port: int = 50054
    notifier_grpc_port: int = 50055
    # Each service's Prometheus metrics (/metrics), and Prometheus itself with the exporters of
    # PostgreSQL and Redis (Debian's packages); Envoy routes /prometheus/api/v1/ to Prometheus's API
    # (the console's health page).
    receiver_metrics_port: int = 51051
    processor_metrics_port: int = 51052
    saver_metrics_port: int = 51053
    assessor_metrics_port: int = 51054
    notifier_metrics_port: int = 51055
    prometheus_port: int = 9090
    # The broker's metrics (the JMX exporter's agent in Kafka's process).
    kafka_metrics_port: int = 9404
    postgres_exporter_port: int = 9187
    redis_exporter_port: int = 9121
    # How long Prometheus keeps its samples.
    prometheus_retention: str = "15d"
    # Where the notifier may deliver webhooks besides public addresses: this machine.
    notifier_allowed_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # Partitions bound how many processor and saver processes can share the work.
    metrics_partitions: int = 8
    events_partitions: int = 4
    kafka_heap: str = "512m"
    # Envoy's worker threads; 0 = one per core but one, which the receivers need more (measured on
    # 2 cores: one Envoy thread passes more single calls than two, 3,850 vs 2,900-3,700 a second).
    envoy_concurrency: int = 0
    # State and logs of every part.
    state_dir: Path = ROOT / ".stack"
    # `make run` refuses to start with less free disk than this: PostgreSQL and Kafka stop when it is full.
    min_free_mb: int = 2048
    # The PostgreSQL server binaries (Debian's postgresql package).
    postgres_bin: Path = Path("/usr/lib/postgresql/15/bin")

    @property
    def ports(self) -> list[int]:
        """Every port the stack listens on."""
        return [
            value
            for name, value in vars(self).items()
            if name.endswith("_port") and (name != "envoy_port" or self.envoy_plaintext)
        ]

    @property
    def envoy_threads(self) -> int:
        return self.envoy_concurrency or max(1, len(os.sched_getaffinity(0)) - 1)

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def secrets_dir(self) -> Path:
        """The password of each server account (stack/credentials.py)."""
        return self.state_dir / "secrets"

    @property
    def postgres_socket_dir(self) -> Path:
        """Where PostgreSQL's unix socket is: the stack's own way in as the superuser."""
        return self.state_dir / "postgres" / "run"

    def postgres_dsn(self, role: str) -> str:
        """A DSN without the password (stack/access.py adds it)."""
        return f"postgresql://{role}@127.0.0.1:{self.postgres_port}/metrics"

    def redis_url(self, user: str) -> str:
        """A URL without the password (stack/access.py adds it)."""
        return f"redis://{user}@127.0.0.1:{self.redis_port}/0"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"


def load() -> StackSettings:
    return settings.load(StackSettings, "stack")
