"""Producing what the processor stored to be produced (the sensors' pending lists, counters.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator

from aiokafka import AIOKafkaProducer

from metrics.v1 import event_pb2
from processor.stream import alarms
from runtime import kafka

EVENT_HEADERS = kafka.headers(kafka.EVENT_TYPE)


async def produce(producer: AIOKafkaProducer, topic: str, entries: Iterable[bytes]) -> None:
    """Produces pending entries as the events they are, keyed by sensor; returns once Kafka has
    them all."""
    await produce_events(producer, topic, (alarms.produced(entry) for entry in entries))


async def produce_events(producer: AIOKafkaProducer, topic: str, events: Iterable[bytes]) -> None:
    """Produces serialized events, keyed by sensor; returns once Kafka has them all."""
    acks = []
    for value in events:
        key = event_pb2.Event.FromString(value).sensor_id.encode()
        acks.append(await producer.send(topic, value, key=key, headers=EVENT_HEADERS))
    await asyncio.gather(*acks)


def entries(pending: Iterable[tuple[str, list[bytes]]]) -> Iterator[bytes]:
    """The entries of (sensor, entries) pairs, in order."""
    for _, sensor_entries in pending:
        yield from sensor_entries
