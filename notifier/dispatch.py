"""The dispatcher: works off the deliveries table, many subscriptions at once, each sensor's
deliveries to a subscription one at a time and in order.

Per attempt: claim (lease the delivery in PostgreSQL) → POST → record the outcome. A delivered one
is done; a failed one is tried again after a backoff with full jitter, and its subscription is
failing, then dead-lettered after `dead_letter_after` failures in a row. A notifier that dies
mid-attempt leaves the lease to run out (the time limit plus LEASE_MARGIN_S): the delivery is tried
again then, with the same Idempotency-Key. At least once, never blocking other subscriptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

import asyncpg

from metrics.v1 import event_pb2
from notifier import instruments, store, webhook
from notifier.destinations import Refused, parse_url
from notifier.settings import NotifierSettings
from notifier.store import Claimed
from notifier.webhook import AttemptFailed, Sender
from runtime import postgres

log = logging.getLogger(__name__)

# A lease outlives an attempt's time limit by this much: a live notifier always records its outcome first.
LEASE_MARGIN_S = 5.0
SAMPLE_EVERY_S = 5.0
PURGE_EVERY_S = 60.0


def backoff(failures: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """The wait before the next attempt after `failures` failed ones: full jitter, uniformly random in
    [0, min(max_s, base_s * 2^(failures-1))]."""
    ceiling = min(max_s, base_s * 2.0 ** min(failures - 1, 60))
    return rng.uniform(0.0, ceiling)


class Dispatcher:
    def __init__(self, pool: asyncpg.Pool, sender: Sender, config: NotifierSettings) -> None:
        self._pool = pool
        self._sender = sender
        self._config = config
        self._wake = asyncio.Event()
        self._attempts: set[asyncio.Task[None]] = set()
        self._rng = random.Random()  # noqa: S311 - jitter, not a secret
        self._lease_s = config.delivery_timeout_s + LEASE_MARGIN_S

    def wake(self) -> None:
        """Looks for due deliveries now (new ones were queued, or a queue moved on)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Claims and attempts due deliveries until `stop`; then lets the attempts under way finish
        within the shutdown grace (those cut short are tried again when their lease runs out)."""
        housekeeping = asyncio.create_task(self._housekeeping(stop))
        failing_since: float | None = None
        try:
            while not stop.is_set():
                self._wake.clear()
                room = self._config.max_in_flight - len(self._attempts)
                claimed: list[Claimed] = []
                if room > 0:
                    try:
                        claimed = await store.claim(self._pool, room, self._lease_s)
                    except postgres.OUTAGE as exc:
                        if failing_since is None:
                            failing_since = time.monotonic()
                            log.warning("cannot claim deliveries, retrying: %s: %s", type(exc).__name__, exc)
                    else:
                        if failing_since is not None:
                            log.info("claiming again after %.0f s", time.monotonic() - failing_since)
                            failing_since = None
                for delivery in claimed:
                    task = asyncio.create_task(self._attempt(delivery))
                    self._attempts.add(task)
                    task.add_done_callback(self._attempts.discard)
                if len(claimed) < room or room <= 0:
                    await self._sleep(stop)
        finally:
            housekeeping.cancel()
            await self._drain()

    async def _sleep(self, stop: asyncio.Event) -> None:
        waits = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
        try:
            await asyncio.wait(
                waits, timeout=self._config.poll_interval_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for wait in waits:
                wait.cancel()

    async def _drain(self) -> None:
        if not self._attempts:
            return
        log.info("waiting for %d attempt(s) under way", len(self._attempts))
        _, cut = await asyncio.wait(self._attempts, timeout=self._config.shutdown_grace_s)
        for task in cut:
            task.cancel()
        if cut:
            log.warning("%d attempt(s) cut short: tried again once their lease runs out", len(cut))

    async def _attempt(self, delivery: Claimed) -> None:
        instruments.IN_FLIGHT.inc()
        try:
            await self._attempt_and_record(delivery)
        except postgres.OUTAGE as exc:
            # The outcome is not recorded: the lease runs out and the delivery is tried again.
            log.warning("outcome of delivery %s to %s not recorded (%s): it will be tried again",
                        delivery.event_id, delivery.subscription_id, exc)  # fmt: skip
        except Exception:  # a bug: logged with its traceback, and tried again after the lease
            log.exception(
                "delivery %s to %s failed unexpectedly", delivery.event_id, delivery.subscription_id
            )
        finally:
            instruments.IN_FLIGHT.dec()
            self.wake()  # the next delivery of its queue may be due now

    async def _attempt_and_record(self, delivery: Claimed) -> None:
        if delivery.attempt > 1:
            instruments.RETRIES.inc()
        event = event_pb2.Event.FromString(delivery.event)
        payload = webhook.body(delivery.subscription_id, event, delivery.attempt, time.time_ns())
        headers = {
            webhook.IDEMPOTENCY_HEADER: event.event_id,
            webhook.SIGNATURE_HEADER: webhook.signature(delivery.secret, payload),
        }
        try:
            await self._sender.post(parse_url(delivery.url), payload, headers)
        except (AttemptFailed, Refused) as exc:
            kind = exc.kind if isinstance(exc, AttemptFailed) else "address"
            await self._failed(delivery, str(exc), kind)
            return
        await store.delivered(self._pool, delivery.subscription_id, delivery.event_id)
        instruments.DELIVERED.inc()
        instruments.DELIVERY_SECONDS.observe(max(0.0, time.time() - delivery.detect_time_us / 1e6))

    async def _failed(self, delivery: Claimed, error: str, kind: str) -> None:
        instruments.ATTEMPTS_FAILED.labels(kind).inc()
        wait = backoff(delivery.attempt, self._config.retry_base_s, self._config.retry_max_s, self._rng)
        dead = await store.failed(self._pool, delivery.subscription_id, delivery.event_id, wait, error,
                                  self._config.dead_letter_after)  # fmt: skip
        if dead:
            instruments.DEAD_LETTERED.inc(dead)
            log.warning(
                "subscription %s dead-lettered after %d failed attempts in a row (last: %s); "
                "%d deliveries kept until it is resumed",
                delivery.subscription_id, self._config.dead_letter_after, error, dead,
            )  # fmt: skip
        else:
            log.info("delivery of %s to %s failed (attempt %d: %s), next in %.1f s",
                     delivery.event_id, delivery.subscription_id, delivery.attempt, error, wait)  # fmt: skip

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        """Samples the gauges, and removes delivered rows past their retention."""
        last_purge = 0.0
        while not stop.is_set():
            with contextlib.suppress(*postgres.OUTAGE):
                by_state, pending = await store.counts(self._pool)
                for state, name in ((store.HEALTHY, "healthy"), (store.FAILING, "failing"),
                                    (store.DEAD_LETTERED, "dead_lettered")):  # fmt: skip
                    instruments.SUBSCRIPTIONS.labels(name).set(by_state.get(state, 0))
                instruments.PENDING.set(pending)
                if time.monotonic() - last_purge >= PURGE_EVERY_S:
                    await store.purge_delivered(self._pool, self._config.delivered_retention_s)
                    last_purge = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)
