"""Where the assessor's queries go: a streaming replica of PostgreSQL when one is configured, up, and
at most `max_lag_s` behind the primary; the primary otherwise.

The lag is the time since the replica last had replayed everything the primary had written (the
primary's WAL position, then the replica's replayed one, every CHECK_EVERY_S): an idle pair is not
behind, however long ago the last write was. A replica that does not answer is left until it does;
with the primary away, the replica answers (as fresh as it is). A query the replica fails (it went
away since the last check, or cancelled the query for a conflict with recovery) is run again on the
primary: queries only read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from runtime import postgres

log = logging.getLogger(__name__)

T = TypeVar("T")

CHECK_EVERY_S = 0.5
# The WAL positions as byte counts.
PRIMARY_POSITION = "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"
REPLAYED_POSITION = "SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn"


class Database:
    def __init__(self, primary: asyncpg.Pool, replica: asyncpg.Pool | None, max_lag_s: float) -> None:
        self._primary = primary
        self._replica = replica
        self._max_lag_s = max_lag_s
        self._use_replica = False
        self._caught_up_at = time.monotonic()

    async def query(self, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """`work` on the replica when it is the one to use, else (or when the replica fails it) on
        the primary."""
        if not self._use_replica or self._replica is None:
            return await work(self._primary)
        try:
            return await work(self._replica)
        except postgres.OUTAGE as error:
            log.warning("a query failed on the replica (%s): run on the primary", type(error).__name__)
            self._use_replica = False  # until the next check finds it fine
            return await work(self._primary)

    async def follow(self, stop: asyncio.Event) -> None:
        """Decides every CHECK_EVERY_S where queries go, until `stop`."""
        if self._replica is None:
            return
        while not stop.is_set():
            self._choose(await self._lag())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CHECK_EVERY_S)

    async def _lag(self) -> float | None:
        """Seconds the replica is behind; None when it does not answer; 0 when the primary does not."""
        assert self._replica is not None
        try:
            primary = await self._primary.fetchval(PRIMARY_POSITION, timeout=CHECK_EVERY_S * 2)
        except postgres.OUTAGE:
            primary = None
        try:
            replayed = await self._replica.fetchval(REPLAYED_POSITION, timeout=CHECK_EVERY_S * 2)
        except postgres.OUTAGE:
            return None
        if primary is None or replayed is None or replayed >= primary:
            # Caught up, or nothing to compare with (a primary away; a replayed position of None: the
            # server is a primary itself, say promoted).
            self._caught_up_at = time.monotonic()
        return time.monotonic() - self._caught_up_at

    def _choose(self, lag: float | None) -> None:
        use = lag is not None and lag <= self._max_lag_s
        if use != self._use_replica:
            if use:
                log.info("queries go to the replica (%.1f s behind at most)", lag)
            elif lag is None:
                log.warning("the replica does not answer: queries go to the primary")
            else:
                log.warning(
                    "the replica is %.1f s behind (over %.1f s): queries go to the primary",
                    lag,
                    self._max_lag_s,
                )
        self._use_replica = use
