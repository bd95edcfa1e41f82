"""What the services report on their /metrics pages, and waiting on it."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(address: str) -> Samples:
    """Every sample a /metrics page (host:port) holds, as Prometheus would read it."""

    def get() -> str:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(get)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def rules_in_force(
    kafka_options: dict[str, Any], rules_topic: str, processors: Sequence[str], within_s: float = 10.0
) -> None:
    """Waits until every processor (the host:port of its metrics) applies the rules as the rules topic
    holds them now: RulesService acknowledges a change once it is on the topic, and a processor
    applies it from its next round on once it has read it (metrics_processor_rules_offset)."""
    if not processors:
        raise ValueError("processors: none named, so nothing can say the rules are in force")
    partition = TopicPartition(rules_topic, 0)  # one partition: every processor reads every rule
    consumer = AIOKafkaConsumer(**kafka_options)
    await consumer.start()
    try:
        end = (await consumer.end_offsets([partition]))[partition]
    finally:
        await consumer.stop()
    deadline = time.monotonic() + within_s
    for address in processors:
        while (
            read := (await scrape(address)).get(("metrics_processor_rules_offset", frozenset()), -1)
        ) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"processor {address} read the rules topic to {read:.0f}, not to {end}")
            await asyncio.sleep(0.02)
