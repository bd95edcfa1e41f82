"""The metrics ecosystem's doors: InfluxDB line protocol and Prometheus remote write in, stored end to
end, and PromQL through Prometheus's remote read of the stored readings (docs/prometheus.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from bench import measure
from bench.measure import Env
from testkit import prometheus
from testkit.http import http

LINES_PER_BATCH = 5_000
SAMPLES_PER_REQUEST = 2_000
CONCURRENCY = 4
REMOTE_WRITE = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}


@dataclass(frozen=True)
class Sent:
    first_send: float  # monotonic
    accepted: int


async def line_protocol(env: Env, seconds: float) -> float:
    """Readings per second stored, from batches of 5,000 lines (a field each, times of arrival) sent
    4 at a time through Envoy for `seconds`, until every one is stored."""
    prefix = f"{env.prefix}lp-"
    bodies = [
        "\n".join(f"lpbench,sensor={prefix}{(b * LINES_PER_BATCH + i) % 500},site=p7 value={i % 97}.5"
                  for i in range(LINES_PER_BATCH)).encode()
        for b in range(4)
    ]  # fmt: skip
    url = f"http://{env.envoy}/write"
    sent = await _send_for(seconds, lambda n: _post(url, bodies[n % len(bodies)], {}, n))
    return await _stored_per_s(env, prefix, sent)


async def remote_write(env: Env, seconds: float) -> float:
    """Samples per second stored, from Prometheus-shaped remote write requests (2,000 series of a
    sample each: 100 instances of 20 metrics) sent 4 at a time through Envoy for `seconds`, until
    every one is stored. The requests are made before the clock starts."""
    prefix = f"{env.prefix}rw-"
    count = int(seconds * 150_000 / SAMPLES_PER_REQUEST) + CONCURRENCY
    now_ms = time.time_ns() // 1_000_000 - 3_600_000
    bodies = [
        prometheus.write_body(
            ({"__name__": f"node_metric_{i % 20}", "instance": f"{prefix}{i // 20}", "job": "node"},
             [(float(i % 97), now_ms + n)])
            for i in range(SAMPLES_PER_REQUEST)
        )
        for n in range(count)
    ]  # fmt: skip
    url = f"http://{env.envoy}/api/v1/write"
    sent = await _send_for(seconds, lambda n: _post(url, bodies[n], REMOTE_WRITE, n), limit=count)
    return await _stored_per_s(env, prefix, sent)


async def promql_range_queries(env: Env, repeats: int) -> list[float]:
    """Milliseconds per PromQL range query through the stack's Prometheus: a day of the 1 Hz history
    sensor in 5-minute steps, every sample read from us by remote read."""
    end_s = measure.HISTORY_END_US // 1_000_000 - 3600
    params = {
        "query": f'avg_over_time(temperature{{sensor="{measure.HISTORY_SENSOR}"}}[5m])',
        "start": end_s - 86_400, "end": end_s, "step": 300,
    }  # fmt: skip
    url = f"http://127.0.0.1:{env.stack.prometheus_port}/api/v1/query_range?{urlencode(params)}"
    times = []
    for n in range(repeats + 1):
        started = time.perf_counter()
        status, body = await http("GET", url)
        elapsed = (time.perf_counter() - started) * 1000
        points = len(body["data"]["result"][0]["values"]) if status == 200 and body["data"]["result"] else 0
        if status != 200 or points != 289:
            env.say(
                f"warning: PromQL range query: HTTP {status}, {points} points, expected 289: {str(body)[:200]}"
            )
        if n:  # the first warms Prometheus and the assessor
            times.append(elapsed)
    return times


async def _post(url: str, body: bytes, headers: dict[str, str], n: int) -> int:
    status, answer = await http("POST", url, raw=body, headers=headers)
    if status != 200:
        raise RuntimeError(f"request {n}: HTTP {status}: {str(answer)[:300]}")
    return int(answer["acceptedCount"])


async def _send_for(seconds: float, send: Callable[[int], Awaitable[int]], limit: int | None = None) -> Sent:
    """Requests `send(n)`, CONCURRENCY at a time, for `seconds` (or `limit` requests)."""
    started = time.monotonic()
    deadline = started + seconds
    counter = iter(range(limit if limit is not None else 10**9))
    accepted = 0

    async def worker() -> None:
        nonlocal accepted
        for n in counter:
            if time.monotonic() >= deadline:
                return
            taken = await send(n)  # not `accepted += await ...`: that reads it before awaiting
            accepted += taken

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return Sent(started, accepted)


async def _stored_per_s(env: Env, prefix: str, sent: Sent) -> float:
    drained = await measure.wait_drained(env)
    stored = await measure.stored(env, prefix)
    if stored != sent.accepted:
        env.say(f"warning: {sent.accepted:,} readings acknowledged but {stored:,} stored")
    return stored / (drained - sent.first_send)
