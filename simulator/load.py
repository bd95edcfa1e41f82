"""Sends a fleet's readings at a rate over one ingest path, counting what the receiver acknowledged."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from metrics.v1 import metric_pb2, receiver_service_pb2, receiver_service_pb2_grpc
from simulator.fleet import Fleet

PATHS = ("stream", "sync", "unary", "http")
# The most readings one client stream carries before it ends and waits for its answer.
STREAM_READINGS = 16_000
Batches = asyncio.Queue[list[metric_pb2.Metric] | None]


@dataclass
class Plan:
    fleet: Fleet
    path: str = "stream"
    rate: float = 10_000.0  # readings per second; 0 for as fast as the system takes them
    duration_s: float = 10.0
    batch: int = 500
    connections: int = 4
    target: str = "127.0.0.1:8080"


@dataclass
class Result:
    sent: int = 0
    acked: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    first_send: float = 0.0
    last_ack: float = 0.0

    @property
    def elapsed_s(self) -> float:
        return max(self.last_ack - self.first_send, 1e-9)


Progress = Callable[[Result, float], None]


async def run(plan: Plan, progress: Progress | None = None) -> Result:
    """Sends for plan.duration_s; returns once every sent batch is acknowledged or failed."""
    if plan.path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(PATHS)}")
    result = Result()
    batches: asyncio.Queue[list[metric_pb2.Metric] | None] = asyncio.Queue(maxsize=plan.connections * 4)
    sender = {"stream": _stream, "sync": _sync, "unary": _unary, "http": _http}[plan.path]
    started = time.monotonic()
    result.first_send = started
    reporter = asyncio.create_task(_report(result, started, progress)) if progress else None
    async with grpc.aio.insecure_channel(
        plan.target, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        stub = receiver_service_pb2_grpc.ReceiverServiceStub(channel)
        senders = [asyncio.create_task(sender(stub, plan, batches, result)) for _ in range(plan.connections)]
        await _produce(plan, batches, started)
        for _ in senders:
            await batches.put(None)
        await asyncio.gather(*senders)
    if reporter:
        reporter.cancel()
        progress(result, time.monotonic() - started)  # type: ignore[misc]
    return result


async def _produce(
    plan: Plan, batches: asyncio.Queue[list[metric_pb2.Metric] | None], started: float
) -> None:
    """Makes batches on schedule; when the senders fall behind, the queue holds the schedule back."""
    made = 0
    while (elapsed := time.monotonic() - started) < plan.duration_s:
        due = plan.rate * elapsed if plan.rate else made + plan.batch
        if made + plan.batch > due:
            await asyncio.sleep(min(0.005, (made + plan.batch - due) / plan.rate))
            continue
        await batches.put(plan.fleet.batch(plan.batch))
        made += plan.batch


def _sent(result: Result, n: int) -> float:
    result.sent += n
    return time.monotonic()


def _acked(result: Result, n: int, since: float) -> None:
    now = time.monotonic()
    result.acked += n
    result.last_ack = now
    result.latencies_ms.append((now - since) * 1000)


def _failed(result: Result, code: str) -> None:
    result.errors[code] += 1
    result.last_ack = time.monotonic()


async def _unary(stub: receiver_service_pb2_grpc.ReceiverServiceAsyncStub, plan: Plan,
                 batches: Batches, result: Result) -> None:  # fmt: skip
    while (batch := await batches.get()) is not None:
        since = _sent(result, len(batch))
        try:
            reply = await stub.PushMetrics(receiver_service_pb2.PushMetricsRequest(metrics=batch), timeout=30)
            _acked(result, reply.accepted_count, since)
        except grpc.aio.AioRpcError as error:
            _failed(result, error.code().name)


async def _stream(stub: receiver_service_pb2_grpc.ReceiverServiceAsyncStub, plan: Plan,
                  batches: Batches, result: Result) -> None:  # fmt: skip
    """Client streams of up to a second or STREAM_READINGS readings each: the answer acknowledges
    the whole stream, so a stream holds no more than a receiver writes in a fraction of a second.
    (Bounded by time only, a stream grew to a million readings waiting in Envoy's buffers, and its
    answer came 10-30 s later: the client saw no progress for that long.)"""
    done = False

    async def requests(since: float) -> AsyncIterator[receiver_service_pb2.StreamMetricsRequest]:
        nonlocal done
        readings = 0
        while time.monotonic() - since < 1.0 and readings < STREAM_READINGS:
            batch = await batches.get()
            if batch is None:
                done = True
                return
            _sent(result, len(batch))
            readings += len(batch)
            yield receiver_service_pb2.StreamMetricsRequest(metrics=batch)

    while not done:
        since = time.monotonic()
        try:
            reply = await stub.StreamMetrics(requests(since), timeout=60)
            _acked(result, reply.accepted_count, since)
        except grpc.aio.AioRpcError as error:
            _failed(result, error.code().name)


async def _sync(stub: receiver_service_pb2_grpc.ReceiverServiceAsyncStub, plan: Plan,
                batches: Batches, result: Result) -> None:  # fmt: skip
    """One bidirectional stream, up to 16 batches awaiting their acknowledgement."""
    call = stub.SyncMetrics()
    window = asyncio.Semaphore(16)
    sent_at: dict[int, tuple[float, int]] = {}

    async def read_acks() -> None:
        async for ack in call:
            since, _ = sent_at.pop(ack.sequence)
            if ack.status.code:
                _failed(result, grpc.StatusCode(_code(ack.status.code)).name)
            else:
                _acked(result, ack.accepted_count, since)
            window.release()

    reader = asyncio.create_task(read_acks())
    sequence = 0
    while (batch := await batches.get()) is not None:
        await window.acquire()
        sequence += 1
        sent_at[sequence] = (_sent(result, len(batch)), len(batch))
        await call.write(receiver_service_pb2.SyncMetricsRequest(sequence=sequence, metrics=batch))
    await call.done_writing()
    await reader


def _code(value: int) -> tuple[int, str]:
    return next(c.value for c in grpc.StatusCode if c.value[0] == value)


async def _http(stub: receiver_service_pb2_grpc.ReceiverServiceAsyncStub, plan: Plan,
                batches: Batches, result: Result) -> None:  # fmt: skip
    """POST /v1/metrics:push with JSON bodies over one keep-alive HTTP/1.1 connection."""
    host, port = plan.target.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        while (batch := await batches.get()) is not None:
            body = json.dumps({"metrics": [_json(m) for m in batch]}).encode()
            since = _sent(result, len(batch))
            writer.write(
                b"POST /v1/metrics:push HTTP/1.1\r\nHost: " + host.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\n\r\n" + body
            )  # fmt: skip
            status, payload = await _read_response(reader)
            if status == 200:
                _acked(result, int(json.loads(payload)["acceptedCount"]), since)
            else:
                _failed(result, f"HTTP {status}")
    finally:
        writer.close()


def _json(metric: metric_pb2.Metric) -> dict[str, object]:
    return {
        "sensorId": metric.sensor_id,
        "metricType": metric.metric_type,
        "value": metric.value,
        "readingTime": metric.reading_time.ToJsonString(),
    }


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _report(result: Result, started: float, progress: Progress) -> None:
    while True:
        await asyncio.sleep(1.0)
        progress(result, time.monotonic() - started)
