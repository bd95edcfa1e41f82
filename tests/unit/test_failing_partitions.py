"""A partition whose work fails is retried on its own, and reported once it stalls for too long."""

from __future__ import annotations

import logging

import pytest
from aiokafka import TopicPartition

from runtime import partitions
from runtime.partitions import FailingPartitions

A, B = TopicPartition("metrics", 0), TopicPartition("metrics", 1)


class FakeConsumer:
    """What FailingPartitions asks of a consumer: assignment, pause/resume, committed, seek."""

    def __init__(self) -> None:
        self.assigned = {A, B}
        self.paused: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int | str] = {}
        self.commits = {A: 5}

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def pause(self, tp: TopicPartition) -> None:
        self.paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self.paused.discard(tp)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.commits.get(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.positions[tp] = "beginning"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(partitions.time, "monotonic", clock)
    return clock


async def test_only_the_failing_partition_waits_and_is_reported_once(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = FakeConsumer()
    health: list[bool] = []

    async def serving(up: bool) -> None:
        health.append(up)

    failing = FailingPartitions(consumer, retry_delay_s=1.0, stall_after_s=30.0, serving=serving)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO)
    for _ in range(5):  # fails again and again
        await failing.failed(A, RuntimeError("boom"))
        assert consumer.paused == {A} and consumer.positions[A] == 5  # read again from its commit
        clock.now += 0.5
        await failing.tick()
        assert consumer.paused == {A}
        clock.now += 0.6
        await failing.tick()
        assert consumer.paused == set()  # its delay is over
    assert [r.message for r in caplog.records].count(
        "metrics[0]: round failed, reading it again every 1 s until it succeeds: RuntimeError: boom"
    ) == 1
    assert health == []  # not yet a stall
    clock.now += 30
    await failing.failed(A, RuntimeError("boom"))
    await failing.tick()
    await failing.tick()
    assert health == [False] and failing.stalled == {A}
    assert sum("no progress for" in r.message for r in caplog.records) == 1
    await failing.succeeded(A)
    assert health == [False, True] and failing.stalled == frozenset()
    assert "metrics[0]: rounds succeed again after" in caplog.records[-1].message


async def test_a_partition_with_no_commit_is_read_from_the_beginning(clock: Clock) -> None:
    consumer = FakeConsumer()

    async def serving(up: bool) -> None:
        pass

    failing = FailingPartitions(consumer, 1.0, 30.0, serving)  # type: ignore[arg-type]
    await failing.failed(B, RuntimeError("x"))
    assert consumer.positions[B] == "beginning"


async def test_a_stalled_partition_that_moves_away_clears_the_report(clock: Clock) -> None:
    consumer = FakeConsumer()
    health: list[bool] = []

    async def serving(up: bool) -> None:
        health.append(up)

    failing = FailingPartitions(consumer, 1.0, 30.0, serving)  # type: ignore[arg-type]
    await failing.failed(A, RuntimeError("x"))
    clock.now += 31
    await failing.tick()
    assert health == [False]
    consumer.assigned = {B}  # a rebalance gave it to another member
    await failing.tick()
    assert health == [False, True] and failing.stalled == frozenset()
