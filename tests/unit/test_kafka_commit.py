"""runtime.kafka.commit: a round that ended after a rebalance commits only the partitions the
consumer still has (aiokafka raises IllegalStateError for the others, which crashed a processor
during a rolling upgrade), and a commit refused by the group is logged, not raised."""

from __future__ import annotations

import logging

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from runtime import kafka

METRICS_1, METRICS_6 = TopicPartition("metrics", 1), TopicPartition("metrics", 6)


class Consumer:
    """What commit uses of an AIOKafkaConsumer."""

    def __init__(self, assigned: set[TopicPartition], refuse: bool = False) -> None:
        self.assigned = assigned
        self.refuse = refuse
        self.committed: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.refuse:
            raise CommitFailedError("the group rebalanced")
        self.committed.append(offsets)


async def test_only_the_partitions_still_assigned_are_committed(caplog: pytest.LogCaptureFixture) -> None:
    consumer = Consumer({METRICS_1})
    with caplog.at_level(logging.INFO, "runtime.kafka"):
        await kafka.commit(consumer, {METRICS_1: 10, METRICS_6: 20}, "harmless")  # type: ignore[arg-type]
    assert consumer.committed == [{METRICS_1: 10}]
    assert "not committed: metrics[6], no longer this consumer's (harmless)" in caplog.text


async def test_nothing_is_committed_when_every_partition_went_elsewhere() -> None:
    consumer = Consumer(set())
    await kafka.commit(consumer, {METRICS_6: 20}, "harmless")  # type: ignore[arg-type]
    assert consumer.committed == []


async def test_a_commit_the_group_refuses_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    consumer = Consumer({METRICS_1}, refuse=True)
    await kafka.commit(consumer, {METRICS_1: 10}, "harmless")  # type: ignore[arg-type]
    assert "offsets not committed after a rebalance (harmless)" in caplog.text
