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
        acks = []
        for record, why in records:
            reason = str(why)
            source = f"{record.topic}[{record.partition}]@{record.offset}"
            log.warning("dead-lettering %s: %s", source, reason)
            headers = [
                *(record.headers or ()),
                (DEAD_LETTER_REASON_HEADER, reason.encode()),
                (DEAD_LETTER_SOURCE_HEADER, source.encode()),
                (DEAD_LETTER_CONSUMER_HEADER, self._group),
            ]
            acks.append(await self._producer.send(self._topic, record.value, key=record.key, headers=headers))
        await asyncio.gather(*acks)
        for _, why in records:
            DEAD_LETTERS.labels(self._group_name, why.kind).inc()
