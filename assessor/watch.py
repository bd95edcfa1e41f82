"""Live events: one PostgreSQL LISTEN connection, fanned out to every WatchEvents stream.

The saver announces each newly stored event when its transaction commits (runtime.postgres
EVENTS_CHANNEL), so a watcher sees exactly the events that queries see, once each. Each watcher has
a bounded queue: a client that reads too slowly is cut off with RESOURCE_EXHAUSTED (it can catch up
with ListEvents) instead of holding memory or slowing the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from metrics.v1 import event_pb2
from runtime.errors import ResourceExhausted, ServiceError, Unavailable
from runtime.lifecycle import Stopped, retry_until_stopped
from runtime.postgres import EVENTS_CHANNEL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Filter:
    sensor_id: str = ""
    metric_type: str = ""
    kind: int = 0
    # The sensor-id prefixes the watcher's token covers.
    prefixes: tuple[str, ...] = ("",)

    def matches(self, event: event_pb2.Event) -> bool:
        return (
            (not self.sensor_id or event.sensor_id == self.sensor_id)
            and any(event.sensor_id.startswith(p) for p in self.prefixes)
            and (not self.metric_type or event.metric_type == self.metric_type)
            and (not self.kind or event.kind == self.kind)
        )


class Watcher:
    def __init__(self, where: Filter, queue_size: int) -> None:
        self.filter = where
        self._queue: asyncio.Queue[event_pb2.Event | ServiceError] = asyncio.Queue(queue_size + 1)
        self._limit = queue_size
        self._ended = False

    def offer(self, event: event_pb2.Event) -> None:
        if self._ended:
            return
        if self._queue.qsize() >= self._limit:
            self.end(ResourceExhausted(
                f"the client read events too slowly (more than {self._limit} waiting); "
                "reconnect, and catch up with ListEvents"
            ))  # fmt: skip
            return
        self._queue.put_nowait(event)

    def end(self, error: ServiceError) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(error)

    async def next(self) -> event_pb2.Event:
        item = await self._queue.get()
        if isinstance(item, ServiceError):
            raise item
        return item


class EventHub:
    def __init__(self, dsn: str, queue_size: int = 1_000, password: str | None = None) -> None:
        self._dsn = dsn
        self._password = password
        self._queue_size = queue_size
        self._watchers: set[Watcher] = set()
        self._conn: asyncpg.Connection | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self._dsn, password=self._password, timeout=5)
        self._conn.add_termination_listener(self._on_lost)
        await self._conn.add_listener(EVENTS_CHANNEL, self._on_notify)

    def end_all_for_shutdown(self) -> None:
        self.end_all(Unavailable("the assessor is shutting down; reconnect"))

    async def stop(self) -> None:
        self._stopping.set()
        self.end_all_for_shutdown()
        if self._conn is not None and not self._conn.is_closed():
            self._conn.remove_termination_listener(self._on_lost)
            await self._conn.close(timeout=5)

    def end_all(self, error: ServiceError) -> None:
        for watcher in list(self._watchers):
            watcher.end(error)

    @asynccontextmanager
    async def subscribe(self, where: Filter) -> AsyncIterator[Watcher]:
        if self._conn is None or self._conn.is_closed():
            raise Unavailable("the live event feed is reconnecting; try again shortly")
        watcher = Watcher(where, self._queue_size)
        self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        event = parse(payload)
        for watcher in list(self._watchers):
            if watcher.filter.matches(event):
                watcher.offer(event)

    def _on_lost(self, conn: Any) -> None:
        log.warning(
            "lost the LISTEN connection; ending %d watch stream(s) and reconnecting", len(self._watchers)
        )
        self.end_all(Unavailable("the live event feed was interrupted; reconnect"))
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        with contextlib.suppress(Stopped):
            await retry_until_stopped("PostgreSQL (LISTEN)", self.start, self._stopping, first_delay=0.5)
            log.info("LISTEN connection restored")


def parse(payload: str) -> event_pb2.Event:
    fields = json.loads(payload)
    event = event_pb2.Event(
        event_id=fields["event_id"], kind=fields["kind"], sensor_id=fields["sensor_id"],
        metric_type=fields["metric_type"], value=fields["value"], threshold=fields["threshold"],
        count=fields["count"], rule_id=fields.get("rule_id", ""), severity=fields.get("severity", 0),
        alarm_id=fields.get("alarm_id", ""),
    )  # fmt: skip
    event.reading_time.FromMicroseconds(fields["reading_time_us"])
    event.detect_time.FromMicroseconds(fields["detect_time_us"])
    if alarm := fields.get("alarm"):
        event.alarm.ParseFromString(bytes.fromhex(alarm))
    return event
