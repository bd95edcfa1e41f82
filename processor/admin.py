"""What tools outside the processor (the stack's prune command, the benchmark) may call: stable
functions over the processor's state in Redis, so that the processor can change its insides
without breaking them. Everything else in processor/ is the processor's own."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from google.protobuf import timestamp_pb2

from metrics.v1 import metric_pb2
from processor.rules import parse_rules
from processor.stream import counters
from processor.stream.redis_nodes import RedisNodes
from processor.stream.rounds import script_args
from runtime import records

__all__ = ["RedisNodes", "connect_redis", "delete_sensors", "timed_round"]


def connect_redis(url: str, password: str | None, *, cluster: bool = False, replicas: int = 0) -> RedisNodes:
    """The processor's Redis client (one server, or a Redis Cluster reached through `url`); call
    its start() before use and aclose() after."""
    return RedisNodes.connect(url, password, cluster=cluster, replicas=replicas)


async def delete_sensors(redis: Any, prefix: str) -> int:
    """Removes every key the processor keeps of the sensors whose ids start with `prefix` (counters,
    active alarms, pending events); returns how many keys were deleted. `redis`: a client of one
    server or of a cluster."""
    return await counters.delete_sensors(redis, prefix)


async def timed_round(
    nodes: RedisNodes, metrics: Sequence[metric_pb2.Metric], rules: Sequence[str] = ("temperature:95:3",)
) -> tuple[float, float]:
    """Applies the readings to their counters as one round of the processor does (the counter
    script, then the confirmation of the events it raised); returns the seconds spent making the
    script's arguments and in Redis."""
    book = parse_rules(rules)
    began = time.perf_counter()
    args: list[Any] = []
    script_args(args, records.checked(metrics), metrics, book, timestamp_pb2.Timestamp(), {})
    sensors = dict.fromkeys(m.sensor_id for m in metrics)
    applying = time.perf_counter()
    entries = await counters.Counters(nodes).apply(0, sensors, args)
    if entries:
        await counters.Counters(nodes).confirm(entries)
    return applying - began, time.perf_counter() - applying
