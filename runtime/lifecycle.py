"""Process lifecycle: run a service's main on uvloop, stop it cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import uvloop

log = logging.getLogger(__name__)

T = TypeVar("T")


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Runs `main(stop)`; `stop` is set on SIGTERM or SIGINT, and main returns after cleaning up."""

    async def wrapper() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    uvloop.run(wrapper())


class Stopped(Exception):
    """The service was asked to stop while waiting."""


async def retry_until_stopped(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    stop: asyncio.Event,
    *,
    first_delay: float = 0.2,
    max_delay: float = 5.0,
) -> T:
    """Calls `attempt` until it succeeds, backing off between failures; raises Stopped on stop.

    Used at start, when a dependency (Kafka, Redis, PostgreSQL) may come up after the service.
    """
    delay = first_delay
    failures = 0
    while True:
        if stop.is_set():
            raise Stopped(what)
        try:
            return await attempt()
        except Exception as exc:  # noqa: BLE001 - every failure to connect is retried, and logged
            failures += 1
            if failures == 1 or failures % 10 == 0:
                log.warning("%s: not reachable yet (%s), retrying", what, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, max_delay)


class Server(Protocol):
    async def stop(self, grace: float) -> None: ...


async def shut_down(
    server: Server | None, grace_s: float, *closers: Callable[[], Awaitable[object]] | None
) -> None:
    """How every service ends: no new calls, and the running ones finished within `grace_s`
    (runtime.grpc_server: NOT_SERVING first), then the `closers` awaited in the order given, each
    after what uses it is done (consumers and producers before the connections they need). A closer
    that fails is logged and the next one still runs; None stands for what was never opened."""
    log.info("stopping")
    if server is not None:
        await server.stop(grace_s)
    for close in closers:
        if close is None:
            continue
        try:
            await close()
        except Exception:
            log.exception("while stopping")
    log.info("stopped")
