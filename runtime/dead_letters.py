"""Records that cannot be processed go to the dead-letter topic, with why and where they came from."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer, ConsumerRecord

from runtime.kafka import (
    DEAD_LETTER_CONSUMER_HEADER,
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTER_SOURCE_HEADER,
    KafkaSettings,
)

log = logging.getLogger(__name__)


class DeadLetters:
    def __init__(self, producer: AIOKafkaProducer, settings: KafkaSettings, consumer_group: str) -> None:
        self._producer = producer
        self._topic = settings.dead_letter_topic
        self._group = consumer_group.encode()

    async def send(self, records: Sequence[tuple[ConsumerRecord[bytes, bytes], str]]) -> None:
        """Produces each (record, reason) to the dead-letter topic and waits for the acknowledgements."""
        acks = []
        for record, reason in records:
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
