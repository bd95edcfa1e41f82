"""What the consumer groups have yet to process, and what they gave up on (the dead letters)."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from runtime.kafka import KafkaSettings, client_options

# The groups of the stack and the topics each reads.
GROUPS = {"processor": ("metrics",), "saver": ("metrics", "events"), "notifier": ("events",)}
DEAD_LETTER_TOPIC = "metrics.dlq"


async def topic_partitions(admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
    (description,) = await admin.describe_topics([topic])
    return [TopicPartition(topic, p["partition"]) for p in description["partitions"]]


async def lag(kafka: KafkaSettings, group: str, topic: str) -> int:
    """Records of `topic` that `group` has not committed yet."""
    return (await lags(kafka, {group: (topic,)}))[(group, topic)]


async def lags(kafka: KafkaSettings, groups: dict[str, tuple[str, ...]]) -> dict[tuple[str, str], int]:
    """(group, topic) → records not committed yet, for each group and the topics it reads."""
    consumer = AIOKafkaConsumer(**client_options(kafka))
    admin = AIOKafkaAdminClient(**client_options(kafka), request_timeout_ms=5000)
    await consumer.start()
    await admin.start()
    try:
        topics = {t for ts in groups.values() for t in ts}
        partitions = {t: await topic_partitions(admin, t) for t in topics}
        # The commits first: read after them, the ends are never behind them (read before, a commit
        # made meanwhile could pass them and a lag come out below zero).
        committed = {group: await admin.list_consumer_group_offsets(group) for group in groups}
        end = await consumer.end_offsets([tp for tps in partitions.values() for tp in tps])
        out: dict[tuple[str, str], int] = {}
        for group, group_topics in groups.items():
            for topic in group_topics:
                out[(group, topic)] = sum(
                    end[tp] - (committed[group][tp].offset if tp in committed[group] else 0)
                    for tp in partitions[topic]
                )
        return out
    finally:
        await consumer.stop()
        await admin.close()


async def record_count(kafka: KafkaSettings, topic: str) -> int:
    """Records now in `topic` (retention may have removed older ones)."""
    consumer = AIOKafkaConsumer(**client_options(kafka))
    admin = AIOKafkaAdminClient(**client_options(kafka), request_timeout_ms=5000)
    await consumer.start()
    await admin.start()
    try:
        partitions = await topic_partitions(admin, topic)
        end = await consumer.end_offsets(partitions)
        start = await consumer.beginning_offsets(partitions)
        return sum(end[tp] - start[tp] for tp in partitions)
    finally:
        await consumer.stop()
        await admin.close()
