"""The notifier's settings (see runtime/settings.py for how they are read)."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.kafka import ConsumerSettings
from runtime.migrations import MigrationSettings
from runtime.settings import ServiceSettings, SettingsError, secret


@dataclass(frozen=True)
class NotifierSettings(MigrationSettings, ConsumerSettings, ServiceSettings):
    grpc_port: int = 50055
    metrics_port: int = 51055
    kafka_username: str = "notifier"
    # A role that may use the subscriptions' tables and nothing else (the local stack's metrics_notifier).
    postgres_dsn: str = secret("postgresql://metrics_notifier@127.0.0.1:55432/metrics")
    # postgres_dsn's role's password (as a file: METRICS_NOTIFIER_POSTGRES_PASSWORD_FILE); empty: the DSN's.
    postgres_password: str = secret("")
    # Most PostgreSQL connections open at once.
    postgres_pool_size: int = 8
    # The consumer group of the events topic: the notifiers share its partitions.
    consumer_group: str = "notifier"
    # Most events taken from Kafka per round; below 65,536 (notifier/store.py).
    max_records_per_round: int = 1_000
    # The longest Kafka holds a fetch waiting for more events, in ms: events are few, so a round is
    # what is there, without waiting for more.
    fetch_max_wait_ms: int = 20
    # Where webhooks may go. Public addresses (globally routable), unless public_destinations is off;
    # loopback, private, link-local and other special addresses only within these networks (CIDRs,
    # e.g. "127.0.0.0/8,::1/128"): a subscription must not make the notifier reach inside.
    allowed_networks: tuple[str, ...] = ()
    # false: webhooks go to allowed_networks only, never to public addresses.
    public_destinations: bool = True
    # An attempt (connect, send, the answer's status line) that takes longer has failed.
    delivery_timeout_s: float = 5.0
    # Attempts under way at once, over all subscriptions.
    max_in_flight: int = 32
    # Retries: the wait before attempt n+1 is uniformly random in [0, min(retry_max_s,
    # retry_base_s * 2^(n-1))] seconds ("full jitter").
    retry_base_s: float = 1.0
    # The longest wait before a retry, in seconds.
    retry_max_s: float = 300.0
    # A subscription whose attempts failed this many times in a row is dead-lettered.
    dead_letter_after: int = 10
    # How often due retries (and deliveries queued by other notifiers) are looked for.
    poll_interval_s: float = 0.5
    # Delivered rows are kept this long, so that an event read again is not delivered again.
    delivered_retention_s: float = 3600.0

    def __post_init__(self) -> None:
        positive = ("delivery_timeout_s", "max_in_flight", "retry_base_s", "retry_max_s", "dead_letter_after",
                    "poll_interval_s")  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive, not {getattr(self, name)}")
        if self.max_records_per_round >= 65_536:  # notifier/store.py: ROUND_SPAN
            raise SettingsError(
                f"max_records_per_round must be below 65536, not {self.max_records_per_round}"
            )
