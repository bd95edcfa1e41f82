"""Records that cannot be processed go to the dead-letter topic, with why and where they came from."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer, ConsumerRecord
from prometheus_client import Counter

from runtime.kafka import (
    DEAD_LETTER_CONSUMER_HEADER,
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTER_SOURCE_HEADER,
    KafkaSettings,
)
from runtime.records import Unusable

log = logging.getLogger(__name__)

DEAD_LETTERS = Counter(
    "metrics_dead_letters_total",
    "Records a consumer group sent to the dead-letter topic, by reason (runtime/records.py kinds).",
    ("group", "reason"),
)


class DeadLetters:
    def __init__(self, producer: AIOKafkaProducer, settings: KafkaSettings, consumer_group: str) -> None:
        self._producer = producer
        self._topic = settings.dead_letter_topic
        self._group = consumer_group.encode()
        self._group_name = consumer_group

    async def send(self, records: Sequence[tuple[ConsumerRecord[bytes, bytes], Unusable]]) -> None:
        """Produces each (record, why) to the dead-letter topic and waits for the acknowledgements."""
        await self.send_payloads([
            (record.value, record.key, f"{record.topic}[{record.partition}]@{record.offset}",
             list(record.headers or ()), why)
            for record, why in records
        ])  # fmt: skip

    async def send_payloads(
        self, payloads: Sequence[tuple[bytes | None, bytes | None, str, list[tuple[str, bytes]], Unusable]]
    ) -> None:
        """Produces each (value, key, source, headers, why) to the dead-letter topic, `source` saying
        where it came from (topic[partition]@offset for a record), and waits for the acknowledgements."""
        acks = []
        for value, key, source, their_headers, why in payloads:
            reason = str(why)
            log.warning("dead-lettering %s: %s", source, reason)
            headers = [
                *their_headers,
                (DEAD_LETTER_REASON_HEADER, reason.encode()),
                (DEAD_LETTER_SOURCE_HEADER, source.encode()),
                (DEAD_LETTER_CONSUMER_HEADER, self._group),
            ]
            acks.append(await self._producer.send(self._topic, value, key=key, headers=headers))
        await asyncio.gather(*acks)
        for *_, why in payloads:
            DEAD_LETTERS.labels(self._group_name, why.kind).inc()
