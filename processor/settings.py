"""The processor's settings (see runtime/settings.py for how they are read)."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.kafka import ConsumerSettings
from runtime.migrations import MigrationSettings
from runtime.settings import ServiceSettings, secret


@dataclass(frozen=True)
class ProcessorSettings(MigrationSettings, ConsumerSettings, ServiceSettings):
    grpc_port: int = 50052
    metrics_port: int = 51052
    kafka_username: str = "processor"
    # An ACL user allowed the counters' commands and keys only (the local stack's `processor`).
    redis_url: str = "redis://processor@127.0.0.1:56379/0"
    # redis_url's user's password (as a file: METRICS_PROCESSOR_REDIS_PASSWORD_FILE); empty: the URL's.
    redis_password: str = secret("")
    # true: redis_url names one node of a Redis Cluster (the client learns the others and their
    # slots from it); each round then runs one script per hash slot of its sensors, in one pipeline
    # per node (processor/stream/redis_nodes.py).
    redis_cluster: bool = False
    # How many replicas of a node must have a round's writes before its offsets are committed (WAIT):
    # 1 on a Redis Cluster with a replica per master, so that a replica promoted after its master
    # died holds every round committed. 0: do not wait (a single server). While a node has fewer
    # replicas, the rounds of its sensors fail and are read again until it has them.
    redis_replicas: int = 0
    # How long a round waits for those replicas before it counts as failed.
    redis_replica_timeout_ms: int = 2000
    # The first rules, "type:threshold:count" (one per type), e.g. "temperature:95:3,humidity:80:5":
    # stored once, in an empty rules table; RulesService changes them from then on.
    rules: tuple[str, ...] = ("temperature:95:3",)
    # The consumer group of the metrics topic: the processors share its partitions.
    consumer_group: str = "processor"
    # The compacted topic of the rules (processor/control/rule_feed.py); empty: apply `rules` only,
    # without RulesService (private instances of the tests, deployments with fixed rules).
    rules_topic: str = "rules"
    # The control plane's tables (processor/control/migrations: the rules, the acts on alarms) and the
    # saver's alarms (read): the processor's own role, metrics_processor.
    postgres_dsn: str = secret("postgresql://metrics_processor@127.0.0.1:55432/metrics")
    # postgres_dsn's role's password (as a file: METRICS_PROCESSOR_POSTGRES_PASSWORD_FILE); empty: the DSN's.
    postgres_password: str = secret("")
    # Most records taken from Kafka per round; a round is one Redis script per partition (on a
    # Redis Cluster, per hash slot of its sensors).
    max_records_per_round: int = 2_000
    # Kafka answers a fetch once it has this many bytes, or after fetch_max_wait_ms: fuller fetches
    # (runtime/kafka.py), fewer rounds.
    fetch_min_bytes: int = 65536
    # The longest Kafka holds a fetch waiting for fetch_min_bytes, in ms: an alert waits at most this
    # much longer.
    fetch_max_wait_ms: int = 20
