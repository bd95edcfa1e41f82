"""Compacted topics of one partition that hold a resource's latest state: key = its id, value = its
message (header message-type), or no value once it is deleted (the rules topic, the devices topic).

The owner of a resource publishes each change before it commits it to PostgreSQL, and at start
makes the topic hold what PostgreSQL does (`reconcile`): whatever a crash left between the two.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from google.protobuf.message import DecodeError, Message

from runtime import kafka
from runtime.kafka import KafkaSettings

M = TypeVar("M", bound=Message)
Publish = Callable[[str, M | None], Awaitable[None]]


async def reconcile(publish: Publish[M], stored: Mapping[str, M | None], held: Mapping[str, M]) -> int:
    """Publishes what makes a topic that holds `held` hold `stored` (None: deleted): what it lacks,
    and deletions of what PostgreSQL never committed. Returns how many records it published."""
    published = 0
    for key in sorted({*stored, *held}):
        wanted, now = stored.get(key), held.get(key)
        if (wanted is None and now is not None) or (wanted is not None and now != wanted):
            await publish(key, wanted)
            published += 1
    return published


class Topic(Generic[M]):
    """Publishes to a compacted topic, and reads what it holds."""

    def __init__(
        self, settings: KafkaSettings, topic: str, message_type: type[M], producer: AIOKafkaProducer
    ) -> None:
        self._settings = settings
        self.name = topic
        self._type = message_type
        self._producer = producer
        self._headers = kafka.headers(message_type.DESCRIPTOR.full_name)

    async def publish(self, key: str, message: M | None) -> None:
        """Writes a message (None: the key's deletion) and waits for Kafka's acknowledgement."""
        await (await self.send(key, message))

    async def send(self, key: str, message: M | None) -> Awaitable[object]:
        """Queues a message (None: the deletion); await the result for Kafka's acknowledgement."""
        value = message.SerializeToString() if message is not None else None
        sent: Awaitable[object] = await self._producer.send(
            self.name, value, key=key.encode(), headers=self._headers
        )
        return sent

    async def read(self) -> dict[str, M]:
        """What the topic holds now: each key's latest message (deleted keys, and keys whose latest
        record is not a message of the type, left out)."""
        consumer = AIOKafkaConsumer(
            **kafka.client_options(self._settings), group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partition = TopicPartition(self.name, 0)
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            end = (await consumer.end_offsets([partition]))[partition]
            held: dict[str, M] = {}
            while await consumer.position(partition) < end:
                for records in (await consumer.getmany(partition, timeout_ms=500)).values():
                    for record in records:
                        if record.key is None:
                            continue
                        key = record.key.decode(errors="replace")
                        held.pop(key, None)
                        if record.value is not None:
                            with contextlib.suppress(DecodeError):
                                held[key] = self._type.FromString(record.value)
            return held
        finally:
            await consumer.stop()
