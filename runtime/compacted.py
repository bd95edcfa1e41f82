"""Compacted topics of one partition that hold a resource's latest state: key = its id, value = its
message (header message-type), or no value once it is deleted (the rules topic, the devices topic).

The owner of a resource publishes each change before it commits it to PostgreSQL, and at start
makes the topic hold what PostgreSQL does (`reconcile`): whatever a crash left between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from google.protobuf.message import DecodeError, Message

from runtime import kafka
from runtime.kafka import KafkaSettings

M = TypeVar("M", bound=Message)
Publish = Callable[[str, M | None], Awaitable[None]]


# Records published at once by reconcile (each waits for its acknowledgement; together, they batch).
RECONCILE_AT_ONCE = 1_000


async def reconcile(publish: Publish[M], stored: Mapping[str, M | None], held: Mapping[str, M]) -> int:
    """Publishes what makes a topic that holds `held` hold `stored` (None: deleted): what it lacks,
    and deletions of what PostgreSQL never committed. Returns how many records it published."""
    changes = [
        (key, wanted)
        for key in sorted({*stored, *held})
        if ((wanted := stored.get(key)) is None and held.get(key) is not None)
        or (wanted is not None and held.get(key) != wanted)
    ]
    for first in range(0, len(changes), RECONCILE_AT_ONCE):
        await asyncio.gather(
            *(publish(key, wanted) for key, wanted in changes[first : first + RECONCILE_AT_ONCE])
        )
    return len(changes)


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
        follower = Follower(self._settings, self.name, self._type)
        await follower.start()
        await follower.stop()
        return follower.held


class Follower(Generic[M]):
    """What a compacted topic holds, kept up to date: read to its end by `start`, then followed by
    `follow` (a change is taken within a fetch, 100 ms, of Kafka having it)."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        message_type: type[M],
        changed: Callable[[str, M | None, M | None], None] | None = None,
    ) -> None:
        self._partition = TopicPartition(topic, 0)
        # Told of each key's change as it is taken: (key, before, after), None for absent.
        self._changed = changed
        self._type = message_type
        self._consumer = AIOKafkaConsumer(
            **kafka.client_options(settings), group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100
        )
        self._started = False
        # Each key's latest message (deleted keys, and undecodable records' keys, left out).
        self.held: dict[str, M] = {}
        # True once the topic has been read to the end it had at `start`.
        self.ready = False

    async def start(self) -> None:
        """Reads the topic to its end. (Called again after a failure: the consumer starts once.)"""
        if not self._started:
            await self._consumer.start()
            self._started = True
        self._consumer.assign([self._partition])
        await self._consumer.seek_to_beginning(self._partition)
        end = (await self._consumer.end_offsets([self._partition]))[self._partition]
        while await self._consumer.position(self._partition) < end:
            await self._take(500)
        self.ready = True

    async def follow(self) -> None:
        """Takes changes as they come, until cancelled."""
        while True:
            await self._take(1000)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def _take(self, timeout_ms: int) -> None:
        for records in (await self._consumer.getmany(self._partition, timeout_ms=timeout_ms)).values():
            for record in records:
                if record.key is None:
                    continue
                key = record.key.decode(errors="replace")
                before = self.held.pop(key, None)
                if record.value is not None:
                    with contextlib.suppress(DecodeError):
                        self.held[key] = self._type.FromString(record.value)
                if self._changed is not None:
                    self._changed(key, before, self.held.get(key))
