"""The data path: consume readings, count warnings in Redis, produce events.

Per round of records, in this order (a crash between any two steps loses and duplicates nothing):
  1. per partition, one Redis script per node: counters, the latest reading counted per counter,
     events raised appended to their sensors' pending lists; it returns those lists (and with
     METRICS_PROCESSOR_REDIS_REPLICAS, returns once the node's replicas have its writes);
  2. produce the pending events to Kafka and wait for the acknowledgements;
  3. remove the events that are now in Kafka from the pending lists;
  4. commit the consumed offsets.
After a crash, step 1 skips the readings it had counted and returns the events still pending (the
redelivered records name their sensors again: processor/stream/counters.py), and step 2 produces them; an
event produced twice carries the same event_id both times, and the saver stores it once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from google.protobuf import timestamp_pb2

from metrics.v1 import event_pb2, metric_pb2
from processor.rules import Rule, RuleBook, event_id
from processor.settings import ProcessorSettings
from processor.stream import alarms, counters, instruments, pending
from processor.stream.counters import Counters, field_of, legacy_pending_key
from processor.stream.redis_nodes import RedisNodes
from processor.stream.silence import Silence
from runtime import kafka
from runtime.dead_letters import DeadLetters
from runtime.devices import Coverage
from runtime.failpoints import Failpoints
from runtime.partitions import FailingPartitions
from runtime.records import Unusable, read_metric_batch
from runtime.validation import Checked

log = logging.getLogger(__name__)

THRESHOLD_EXCEEDED = event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED
# After a partition's round failed, the wait before it is read again from its committed offset.
RETRY_DELAY_S = 1.0
# A turn of the loop (a poll and its round) that has not ended after this long is stuck: rounds end
# within seconds, failed or not (Kafka's requests time out after 10 s). Seen once in a test, after the
# broker was killed and back: the processor no longer polled, nothing logged. It then exits (as a
# kill -9 would, which it survives: Kafka redelivers, Redis skips what was counted) and is started
# again.
STUCK_S = 45.0
EXIT_STUCK = 75


class Processor:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        counters: Counters,
        dead_letters: DeadLetters,
        rules: Callable[[], RuleBook],
        config: ProcessorSettings,
        serving: Callable[[bool], Awaitable[None]],
        silence: Silence | None = None,
        coverage: Coverage | None = None,
    ) -> None:
        self._consumer = consumer
        # Silence rules: the devices heard from in a round (`coverage` says whose sensors they are).
        self._silence = silence
        self._coverage = coverage
        self._producer = producer
        self._counters = counters
        self._dead_letters = dead_letters
        # The rules in force, asked once a round: a change applies from the next round on.
        self._rules = rules
        self._config = config
        self._failpoint = Failpoints(config.failpoints)
        self._failing = FailingPartitions(consumer, RETRY_DELAY_S, config.stall_after_s, serving)
        self._turned = time.monotonic()  # when the current turn of run() began

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._turned = time.monotonic()
            await self._failing.tick()
            rounds = await self._consumer.getmany(
                timeout_ms=200, max_records=self._config.max_records_per_round
            )
            if not rounds:
                continue
            began = time.perf_counter()
            # Each partition on its own: one that fails is read again from its commit (and what
            # was counted is skipped then); the others are committed.
            book = self._rules()
            outcomes = await asyncio.gather(
                *(self._process(tp, records, book) for tp, records in rounds.items()), return_exceptions=True
            )
            done: dict[TopicPartition, int] = {}
            for (tp, records), outcome in zip(rounds.items(), outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    await self._failing.failed(tp, outcome)
                else:
                    await self._failing.succeeded(tp)
                    done[tp] = records[-1].offset + 1
            if done:
                self._failpoint("processor.before_commit")
                await self._commit(done)
            instruments.ROUND_SECONDS.observe(time.perf_counter() - began)

    async def watch(self, stop: asyncio.Event) -> None:
        """Exits the process when a turn of run() has not ended for STUCK_S."""
        while not stop.is_set():
            await asyncio.sleep(STUCK_S / 9)
            stuck_s = time.monotonic() - self._turned
            if stuck_s > STUCK_S and not stop.is_set():
                log.error(
                    "no round ended for %.0f s: the consumer is stuck; exiting to be started again", stuck_s
                )
                logging.shutdown()
                os._exit(EXIT_STUCK)

    async def _process(
        self, tp: TopicPartition, records: Sequence[ConsumerRecord[bytes, bytes]], book: RuleBook
    ) -> None:
        args: list[Any] = []
        sensors: dict[str, None] = {}
        resets: dict[str, int] = {}
        dead: list[tuple[ConsumerRecord[bytes, bytes], Unusable]] = []
        detect_time = timestamp_pb2.Timestamp()
        detect_time.GetCurrentTime()
        for record in records:
            readings: list[Checked] = []
            try:
                batch = read_metric_batch(record, readings)
            except Unusable as exc:
                dead.append((record, exc))
                continue
            instruments.READINGS.inc(len(readings))
            # Every sensor of the round, with a rule or not: its events pending from a round
            # that crashed come back with it (processor/stream/counters.py).
            sensors.update(dict.fromkeys(r[0] for r in readings))
            script_args(args, readings, batch.metrics, book, detect_time, resets)
        if dead:
            await self._dead_letters.send(dead)
        if not sensors:
            return
        if book.silence and self._silence is not None and self._coverage is not None:
            # Before the offsets are committed: a round redelivered after a crash is heard again.
            heard = set().union(*(self._coverage.devices_of(sensor) for sensor in sensors))
            await self._silence.seen(detect_time.ToMicroseconds(), heard, book.silence)
        entries = await self._counters.apply(detect_time.ToMicroseconds(), sensors, args)
        if entries:
            self._failpoint("processor.after_apply")
            await pending.produce(self._producer, self._config.events_topic, pending.entries(entries))
            self._failpoint("processor.after_produce")
            await self._counters.confirm(entries)
            produced = sum(len(e) for _, e in entries)
            instruments.EVENTS.inc(produced)
            log.info("produced %d event(s) of %s[%d]", produced, tp.topic, tp.partition)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        await kafka.commit(self._consumer, offsets, "their new processor skips what this one applied")


def script_args(
    args: list[Any],
    readings: Sequence[Checked],
    metrics: Sequence[metric_pb2.Metric],
    rules: RuleBook | Mapping[str, Rule],
    detect_time: timestamp_pb2.Timestamp,
    resets: dict[str, int],
) -> None:
    """Appends the counter script's quintuple for each reading and rule that looks at it (see
    Counters.apply). `readings`: the metrics as checked (runtime/records.py), in the same order;
    only a reading that raises an event is read from its metric again.

    A run of readings that do not meet one rule's condition, with no warning of it between them,
    becomes one reset at the run's latest time (`resets`: counter -> index of the pending reset's
    time in `args`): applied one by one, they would leave the same counter and latest time. Not for
    a rule with alarms: each such reading counts towards clearing its alarm.
    """
    book = RuleBook.of(rules)
    for i, (sensor_id, metric_type, time_us, value, _, _) in enumerate(readings):
        for rule in book.matching(sensor_id, metric_type):
            counter = field_of(sensor_id, rule.field)
            if rule.is_warning(value):
                args += (
                    sensor_id,
                    rule.field,
                    f"{rule.warning_arg}{value!r}" if rule.clear_count else rule.warning_arg,
                    time_us,
                    raised_event(metrics[i], rule, detect_time),
                )
                resets.pop(counter, None)
            elif rule.clear_count:
                args += (sensor_id, rule.field, f"{rule.reset_arg}{value!r}", time_us, b"")
            elif (pending := resets.get(counter)) is not None:
                args[pending] = max(args[pending], time_us)
            else:
                resets[counter] = len(args) + 3
                args += (sensor_id, rule.field, rule.reset_arg, time_us, b"")


def raised_event(metric: metric_pb2.Metric, rule: Rule, detect_time: timestamp_pb2.Timestamp) -> bytes:
    """The event the reading raises if it meets the rule's condition (and the raise of its alarm,
    for a rule with alarms)."""
    reading_ns = metric.reading_time.ToNanoseconds()
    event = event_pb2.Event(
        event_id=event_id(metric.sensor_id, metric.metric_type, reading_ns, THRESHOLD_EXCEEDED, rule.rule_id),
        kind=THRESHOLD_EXCEEDED,
        sensor_id=metric.sensor_id,
        metric_type=metric.metric_type,
        value=metric.value,
        reading_time=metric.reading_time,
        threshold=rule.threshold,
        count=rule.count,
        detect_time=detect_time,
        severity=rule.severity,  # type: ignore[arg-type]
        rule_id=rule.field,
    )
    if rule.clear_count:
        alarms.raised(event)
    return event.SerializeToString()


async def drain_legacy(redis: RedisNodes, producer: AIOKafkaProducer, config: ProcessorSettings) -> None:
    """Produces what the pending lists of the previous version (one per partition, and one of
    clears by hand) still hold: once, at start; on a cluster they never exist."""
    if redis.cluster:
        return
    partitions = await producer.partitions_for(config.metrics_topic)
    keys = [legacy_pending_key(config.metrics_topic, p) for p in sorted(partitions)]

    async def produce(entries: list[bytes]) -> None:
        await pending.produce(producer, config.events_topic, entries)

    await counters.drain_legacy(redis.client, [*keys, counters.LEGACY_CLEARED_PENDING], produce)
