"""How far behind a consumer group is, per partition, as a Prometheus gauge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from prometheus_client import Gauge

log = logging.getLogger(__name__)

CONSUMER_LAG = Gauge(
    "metrics_consumer_lag",
    "Records of a partition not yet committed by the consumer group (end offset - committed offset).",
    ("group", "topic", "partition"),
)
LAG_INTERVAL_S = 5.0


async def watch(consumer: Any, group: str, stop: asyncio.Event, interval_s: float = LAG_INTERVAL_S) -> None:
    """Keeps CONSUMER_LAG of the partitions `consumer` holds, asking Kafka every `interval_s`."""
    shown: set[tuple[str, str, str]] = set()
    while not stop.is_set():
        try:
            assigned = sorted(consumer.assignment())
            ends = await consumer.end_offsets(assigned) if assigned else {}
            now: set[tuple[str, str, str]] = set()
            for tp in assigned:
                committed = await consumer.committed(tp)
                labels = (group, tp.topic, str(tp.partition))
                CONSUMER_LAG.labels(*labels).set(max(0, ends[tp] - (committed or 0)))
                now.add(labels)
            for labels in shown - now:  # moved to another consumer: its lag is that one's to tell
                CONSUMER_LAG.remove(*labels)
            shown = now
        except Exception as exc:  # noqa: BLE001 - Kafka away: the last values stand until it answers
            log.debug("consumer lag not measured: %r", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
