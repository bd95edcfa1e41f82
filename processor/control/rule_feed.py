"""The compacted topic `rules`: every processor reads it whole at start, then follows it, and applies
the rules it holds from its next round on.

Records: key = rule id, value = metrics.v1.Rule (header message-type = metrics.v1.Rule), or no value
for a deleted rule. Changes are published by RuleStore before it commits them (rule_store.py), and
at start whatever PostgreSQL holds that the topic does not (a crash between the two).
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from google.protobuf.message import DecodeError

from metrics.v1 import rule_pb2
from processor.control import rule_checks
from processor.rules import Rule, RuleBook
from processor.stream import instruments
from runtime import compacted, kafka
from runtime.errors import Violation
from runtime.kafka import KafkaSettings

log = logging.getLogger(__name__)


class RuleFeed:
    def __init__(self, settings: KafkaSettings, topic: str, producer: AIOKafkaProducer) -> None:
        self._topic = topic
        self._out = compacted.Topic(settings, topic, rule_pb2.Rule, producer)
        self._consumer = AIOKafkaConsumer(
            **kafka.client_options(settings), group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100
        )
        # What the topic holds: rule id -> rule (deleted ones are not kept).
        self.rules: dict[str, rule_pb2.Rule] = {}
        self.book = RuleBook(())
        self._started = False

    async def start(self) -> None:
        """Reads the topic to its end: the processor starts with every rule in force. (Called again
        after a failure: the consumer is started once.)"""
        if not self._started:
            await self._consumer.start()
            self._started = True
        # One partition: every processor reads every rule, in the order they changed.
        partitions = [TopicPartition(self._topic, 0)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        ends = await self._consumer.end_offsets(partitions)
        while [tp for tp, end in ends.items() if await self._consumer.position(tp) < end]:
            self._take(await self._consumer.getmany(timeout_ms=500))
        await self._read_to(partitions[0])

    async def follow(self) -> None:
        """Applies changes as they come (within a fetch, 100 ms), until cancelled."""
        partition = TopicPartition(self._topic, 0)
        while True:
            self._take(await self._consumer.getmany(timeout_ms=1000))
            await self._read_to(partition)

    async def _read_to(self, partition: TopicPartition) -> None:
        """Says how far the rules in force are read (the next round applies them)."""
        instruments.RULES_OFFSET.set(await self._consumer.position(partition))

    async def stop(self) -> None:
        await self._consumer.stop()

    async def publish(self, rule_id: str, rule: rule_pb2.Rule | None) -> None:
        """Writes a rule (None: its deletion) and waits for Kafka's acknowledgement."""
        await self._out.publish(rule_id, rule)

    async def reconcile(self, stored: dict[str, rule_pb2.Rule | None]) -> int:
        """Makes the topic hold what PostgreSQL does (`stored`, RuleStore.everything): publishes what
        it lacks, and deletes what PostgreSQL never committed (a processor that died between a
        change's publication and its commit)."""
        return await compacted.reconcile(self.publish, stored, self.rules)

    def _take(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        changed = False
        for records in batches.values():
            for record in records:
                changed |= self._apply(record)
        if changed:
            self.book = RuleBook(Rule.of(r) for r in self.rules.values() if r.enabled)
            log.info(
                "rules in force: %s",
                "; ".join(r.describe() for r in self.book) or "none",
            )

    def _apply(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        source = f"{record.topic}[{record.partition}]@{record.offset}"
        if record.key is None:
            log.error("%s: a rule record without a key (the rule id) is ignored", source)
            return False
        rule_id = record.key.decode(errors="replace")
        if record.value is None:
            return self.rules.pop(rule_id, None) is not None
        try:
            rule = rule_pb2.Rule.FromString(record.value)
        except DecodeError as exc:
            log.error("%s: not a metrics.v1.Rule (%s); ignored, the rule stays as it was", source, exc)  # noqa: TRY400
            return False
        problems = rule_checks.violations(rule, prefix="")
        if rule.rule_id != rule_id:
            problems = [*problems, Violation("rule_id", f"is {rule.rule_id!r}, the key {rule_id!r}")]
        if problems:
            named = "; ".join(f"{v.field}: {v.description}" for v in problems)
            log.error("%s: an unusable rule (%s); ignored, the rule stays as it was", source, named)
            return False
        self.rules[rule_id] = rule
        return True
