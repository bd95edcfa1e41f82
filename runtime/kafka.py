"""Kafka: the topics' contract (see metric.proto and event.proto) and client factories."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError

from metrics.v1 import event_pb2, metric_pb2
from runtime.settings import SettingsError, secret

log = logging.getLogger(__name__)

MESSAGE_TYPE_HEADER = "message-type"
# The receiver writes at most 10,000 readings per record; a record with many more came from
# elsewhere and would hold a consumer's round (and memory) hostage: it goes to the dead letters.
MAX_RECORD_READINGS = 100_000
METRIC_BATCH_TYPE = metric_pb2.MetricBatch.DESCRIPTOR.full_name
EVENT_TYPE = event_pb2.Event.DESCRIPTOR.full_name
# Headers of dead-lettered records: why, where the record came from, which consumer gave up on it.
DEAD_LETTER_REASON_HEADER = "dead-letter-reason"
DEAD_LETTER_SOURCE_HEADER = "dead-letter-source"
DEAD_LETTER_CONSUMER_HEADER = "dead-letter-consumer"


@dataclass(frozen=True)
class KafkaSettings:
    """Where Kafka is and what the topics are called; a mixin of the services' settings."""

    # Kafka brokers to start from, "host:port" comma-separated: the client learns the others from them.
    kafka_bootstrap_servers: str = "127.0.0.1:59092"
    # The readings' topic: the receiver writes it, the processor and the saver read it.
    metrics_topic: str = "metrics"
    # The events' topic: the processor writes it; the saver, the assessor's watchers and the notifier read it.
    events_topic: str = "events"
    # The devices' compacted topic: the registry writes it (registry/store.py).
    devices_topic: str = "devices"
    # Where a consumer puts a record it cannot use, with headers saying why (python -m deadletters).
    dead_letter_topic: str = "metrics.dlq"
    # How the client talks to Kafka and says who it is: SASL with SCRAM, one principal per service (its
    # ACLs say what it may do). SASL_PLAINTEXT sends no password (SCRAM is a challenge) but does not
    # encrypt the records: fine on the loopback of the local stack or a private network; SASL_SSL where
    # the network is not trusted.
    kafka_security_protocol: str = "SASL_PLAINTEXT"
    # The SASL mechanism the brokers know the users by (with a SASL_* protocol).
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    # The SASL user: the service's principal. With a SASL_* protocol it is required, as is the password.
    kafka_username: str = ""
    # kafka_username's password; give it as a file (METRICS_KAFKA_PASSWORD_FILE).
    kafka_password: str = secret("")


def client_options(settings: KafkaSettings) -> dict[str, object]:
    """Where Kafka is and how to log in: the options every aiokafka client (admin ones too) takes."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        if not settings.kafka_username or not settings.kafka_password:
            raise SettingsError(
                f"kafka_security_protocol is {settings.kafka_security_protocol}, but kafka_username or "
                "kafka_password is empty: set METRICS_KAFKA_USERNAME and METRICS_KAFKA_PASSWORD_FILE "
                "(or METRICS_<SERVICE>_KAFKA_...)"
            )
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_username,
            "sasl_plain_password": settings.kafka_password,
        }
    return options


def oversized(readings: int) -> str:
    return f"oversized: {readings} readings in one record, more than {MAX_RECORD_READINGS}"


def headers(message_type: str) -> list[tuple[str, bytes]]:
    return [(MESSAGE_TYPE_HEADER, message_type.encode())]


def make_producer(settings: KafkaSettings, client_id: str, **overrides: object) -> AIOKafkaProducer:
    """A producer whose acknowledgement means durably written: acks=all, idempotent."""
    options: dict[str, object] = {
        **client_options(settings),
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
        "max_batch_size": 1024 * 1024,
        "max_request_size": 64 * 1024 * 1024,
        "request_timeout_ms": 10_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


@dataclass(frozen=True)
class ConsumerSettings(KafkaSettings):
    """What a consumer group member has; the processor and the saver set their own defaults."""

    # The consumer group: the service's instances share its topics' partitions, and its committed offsets.
    consumer_group: str = ""
    # Most records taken from Kafka per round.
    max_records_per_round: int = 2_000
    # Kafka answers a fetch once it has this many bytes, or after fetch_max_wait_ms: at a trickle of
    # small records, more bytes make a round more than a record or two.
    fetch_min_bytes: int = 1
    # The longest Kafka holds a fetch waiting for fetch_min_bytes, in ms.
    fetch_max_wait_ms: int = 500
    # A partition whose rounds keep failing for this long while records wait is reported in the
    # log (once) and in the health (NOT_SERVING), until it flows again (runtime/partitions.py).
    stall_after_s: float = 30.0


def make_consumer(settings: ConsumerSettings, client_id: str) -> AIOKafkaConsumer:
    """A member of the settings' group that commits manually, after its side effects; it reads
    what it subscribes to."""
    options: dict[str, object] = {
        **client_options(settings),
        "group_id": settings.consumer_group,
        "client_id": client_id,
        "fetch_min_bytes": settings.fetch_min_bytes,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        # A round holds at most this much (~80k readings): bounded memory, bounded transactions.
        "max_partition_fetch_bytes": 1024 * 1024,
        "fetch_max_bytes": 4 * 1024 * 1024,
        # A crashed member's partitions move on after this long (the broker's minimum is 6 s).
        "session_timeout_ms": 6_000,
        "heartbeat_interval_ms": 1_500,
    }
    return AIOKafkaConsumer(**options)


class LogAssignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """Says in the log which partitions this member of its group reads, after each rebalance."""

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions assigned: %s", describe(assigned) or "none")


def describe(partitions: Sequence[TopicPartition]) -> str:
    """'events[0,2] metrics[1,5]' for a set of partitions."""
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return " ".join(f"{t}[{','.join(map(str, sorted(ps)))}]" for t, ps in sorted(by_topic.items()))


async def commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int], why_harmless: str) -> None:
    """Commits the offsets of the partitions this consumer still has. What a rebalance took away
    meanwhile (the round ended after it) is read again by the partitions' new owner: `why_harmless`
    says, in the log, why that does no harm."""
    kept = {tp: offset for tp, offset in offsets.items() if tp in consumer.assignment()}
    if gone := [tp for tp in offsets if tp not in kept]:
        log.info("not committed: %s, no longer this consumer's (%s)", describe(gone), why_harmless)
    if not kept:
        return
    try:
        await consumer.commit(kept)
    except CommitFailedError as exc:
        log.warning("offsets not committed after a rebalance (%s): %s", why_harmless, exc)
