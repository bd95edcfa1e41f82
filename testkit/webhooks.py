"""A webhook receiver for the tests and the benchmark: an HTTP server on a free loopback port that records
every POST and answers as told, and checks signatures as a subscriber would."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    time: float  # time.time() when its last byte came
    status: int  # what the receiver answered (or was about to, when the sender went away)

    @property
    def notification(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded

    @property
    def event_id(self) -> str:
        return str(self.notification["event"]["eventId"])

    def signed_with(self, secret: str) -> bool:
        """What a subscriber checks: the signature header is the HMAC-SHA256 of the exact body."""
        expected = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("x-metrics-signature", ""), expected)


@dataclass
class Webhook:
    """Answers 200 unless told otherwise per path: a list of statuses to answer next (`script`), an
    answer for the rest (`always`), or a hold: no answer until the event is set (`hold`)."""

    received: list[Received] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)
    always: dict[str, int] = field(default_factory=dict)
    hold: dict[str, asyncio.Event] = field(default_factory=dict)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str, status: int | None = 200) -> list[Received]:
        """The requests to `path` answered with `status` (None: all), in the order they came."""
        return [r for r in self.received if r.path == path and (status is None or r.status == status)]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            path = request_line.split()[1].decode()
            queued = self.script.get(path)
            status = queued.pop(0) if queued else self.always.get(path, 200)
            self.received.append(Received(path, headers, body, time.time(), status))
            if path in self.hold:
                await self.hold[path].wait()
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            pass  # the sender went away (a notifier killed mid-attempt)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def webhook() -> AsyncIterator[Webhook]:
    hook = Webhook()
    server = await asyncio.start_server(hook.handle, "127.0.0.1", 0)
    hook.port = server.sockets[0].getsockname()[1]
    try:
        yield hook
    finally:
        for held in hook.hold.values():
            held.set()
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)
