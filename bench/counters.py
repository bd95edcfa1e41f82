"""The processor's Redis cost per reading: rounds of the counter script (apply, then confirm what it
returned) of 5,000 readings, over 5,000 sensors and over 10, the best of several rounds.

    python -m bench.counters                                   # the local stack's Redis
    python -m bench.counters redis://127.0.0.1:7000/0 PASSWORD 1   # a Redis Cluster, WAIT for 1 replica
"""

from __future__ import annotations

import asyncio
import random
import sys
import uuid

from metrics.v1 import metric_pb2
from processor import admin
from stack import access, credentials, settings

BASE_US = 1_770_000_000_000_000


async def rounds(
    nodes: admin.RedisNodes, sensors: int, readings: int = 5_000, count: int = 6
) -> tuple[float, float]:
    """µs per reading of the best round: Redis alone, and with making the script's arguments."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    rng = random.Random(1)
    best = best_total = float("inf")
    try:
        for r in range(count):
            metrics = []
            for i in range(readings):
                metric = metric_pb2.Metric(
                    sensor_id=f"{prefix}-{i % sensors}",
                    metric_type="temperature",
                    value=rng.choice([90.0, 96.0]),
                )
                metric.reading_time.FromMicroseconds(BASE_US + r * readings + i)
                metrics.append(metric)
            making, in_redis = await admin.timed_round(nodes, metrics)
            if r:  # the first loads the script
                best, best_total = min(best, in_redis), min(best_total, making + in_redis)
    finally:
        await admin.delete_sensors(nodes.client, prefix)
    return best / readings * 1e6, best_total / readings * 1e6


async def main(argv: list[str]) -> None:
    if argv:
        url, password, replicas = argv[0], argv[1] or None, int(argv[2]) if len(argv) > 2 else 0
        nodes = admin.connect_redis(url, password, cluster=True, replicas=replicas)
    else:
        stack = settings.load()
        nodes = admin.connect_redis(stack.redis_url("admin"), access.password(stack, credentials.REDIS_ADMIN))
    await nodes.start()
    try:
        for sensors in (5_000, 10):
            redis_us, total_us = await rounds(nodes, sensors)
            print(
                f"{sensors:>5} sensors: {redis_us:.2f} µs/reading in Redis, {total_us:.2f} with the arguments"
            )
    finally:
        await nodes.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
