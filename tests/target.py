"""The deployment under test, read from a TOML file (METRICS_TEST_TARGET, default: the local stack)."""

from __future__ import annotations

import functools
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from runtime.kafka import KafkaSettings
from stack import credentials
from stack import settings as stack_settings
from stack.credentials import Account

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = Path(__file__).parent / "targets" / "local.toml"


@dataclass(frozen=True)
class Target:
    envoy: str
    # The TLS port, the CA that signed its certificate, and the folder of the keys that sign tokens
    # (PEM files named by key id; the newest signs). Relative paths are from the checkout's root.
    envoy_tls: str
    tls_ca_file: str
    token_keys_dir: str
    kafka_bootstrap_servers: str
    # The admin's (redis) and the reader's (postgres), without passwords: those are in `credentials`.
    redis_url: str
    postgres_dsn: str
    metrics_topic: str
    events_topic: str
    dead_letter_topic: str
    processor_group: str
    saver_group: str
    local_stack: bool
    services: dict[str, str]
    # The folder of the password files (named as stack/credentials.py names them); a relative path is
    # from the checkout's root; empty: the local stack's.
    credentials_dir: str = ""
    # The compacted topic the processors take their rules from.
    rules_topic: str = "rules"
    # Whether redis_url is a node of a Redis Cluster (the cluster topology).
    redis_cluster: bool = False
    # Where each service serves its Prometheus metrics (host:port), and Prometheus (host:port); the
    # local stack's. Empty: the deployment runs none.
    metrics: dict[str, str] = field(default_factory=dict)
    prometheus: str = ""
    notifier_group: str = "notifier"
    # The MQTT broker on this machine: its plaintext port (no credentials) and its TLS port (devices).
    mqtt_port: int = 1883
    mqtt_tls_port: int = 8883
    # Every processor's metrics (host:port), when there are several; by default metrics' processor.
    processors_metrics: list[str] = field(default_factory=list)

    @property
    def processor_metrics(self) -> list[str]:
        """Where every processor serves its metrics."""
        return self.processors_metrics or [a for a in [self.metrics.get("processor")] if a]

    @property
    def envoy_url(self) -> str:
        return f"http://{self.envoy}"

    @property
    def envoy_tls_url(self) -> str:
        return f"https://{self.envoy_tls}"

    @property
    def secrets_dir(self) -> Path:
        if not self.credentials_dir:
            return stack_settings.load().secrets_dir
        return ROOT / self.credentials_dir

    def password_file(self, account: Account) -> Path:
        return credentials.password_file(self.secrets_dir, account)

    def password(self, account: Account) -> str:
        return credentials.password(self.secrets_dir, account)

    def kafka(self, account: Account = credentials.KAFKA_ADMIN) -> KafkaSettings:
        """Kafka settings of a principal: runtime.kafka.client_options makes client options of them."""
        return KafkaSettings(
            kafka_bootstrap_servers=self.kafka_bootstrap_servers,
            kafka_username=account.user,
            kafka_password=self.password(account),
        )

    def postgres_dsn_of(self, account: Account) -> str:
        """The DSN of the target's database for another of its roles."""
        return _with_user(self.postgres_dsn, account.user)

    def redis_url_of(self, user: str | None) -> str:
        """The URL of the target's Redis for another user (None: no user, as an anonymous client)."""
        return _with_user(self.redis_url, user)

    def service_credentials(self, service: str) -> dict[str, str]:
        """How a private instance of `service` logs in: Kafka as admin (its topics and group are its
        own, no ACL names them), Redis as admin, PostgreSQL as the role the service has."""
        env = {
            "METRICS_KAFKA_USERNAME": credentials.KAFKA_ADMIN.user,
            "METRICS_KAFKA_PASSWORD_FILE": str(self.password_file(credentials.KAFKA_ADMIN)),
            "METRICS_REDIS_URL": self.redis_url,
            "METRICS_REDIS_PASSWORD_FILE": str(self.password_file(credentials.REDIS_ADMIN)),
        }
        owner = credentials.POSTGRES_OWNER  # the migrations of the tables a service owns
        roles = {
            "processor": {"POSTGRES": credentials.POSTGRES_PROCESSOR, "MIGRATIONS": owner},
            "saver": {"POSTGRES": credentials.POSTGRES_WRITER, "MIGRATIONS": owner},
            "assessor": {"POSTGRES": credentials.POSTGRES_READER},
            "notifier": {"POSTGRES": credentials.POSTGRES_NOTIFIER, "MIGRATIONS": owner},
            "registry": {"POSTGRES": credentials.POSTGRES_REGISTRY, "MIGRATIONS": owner},
        }
        for setting, account in roles.get(service, {}).items():
            env[f"METRICS_{setting}_DSN"] = self.postgres_dsn_of(account)
            env[f"METRICS_{setting}_PASSWORD_FILE"] = str(self.password_file(account))
        return env


def _with_user(url: str, user: str | None) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))


@functools.cache
def load() -> Target:
    path = Path(os.environ.get("METRICS_TEST_TARGET", DEFAULT))
    with path.open("rb") as f:
        return Target(**tomllib.load(f))
