"""PostgreSQL connections as the services use them: UTC, and times as integer microseconds."""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import asyncpg

T = TypeVar("T")

# PostgreSQL counts time from 2000-01-01; the services use microseconds since 1970-01-01.
PG_EPOCH_US = 946_684_800 * 1_000_000


async def setup_connection(conn: asyncpg.Connection) -> None:
    """timestamptz values travel as int microseconds since 1970: no datetime object per row."""
    await conn.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        encoder=lambda us: (us - PG_EPOCH_US,),
        decoder=lambda t: t[0] + PG_EPOCH_US,
        format="tuple",
    )


def now_us() -> int:
    """Now, as the tables keep times: microseconds since 1970."""
    return time.time_ns() // 1000


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the pool in a transaction, committed when the block ends (rolled back if it raises)."""
    async with pool.acquire() as conn, conn.transaction():
        yield conn


def prefix_upper_bound(prefix: str) -> str:
    """The least string above every string that starts with `prefix` (not empty): `col >= prefix AND
    col < bound` is an index range, exact in the code-point collation of the stack's database."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


SERVER_SETTINGS = {"timezone": "UTC"}

# What a call raises when PostgreSQL goes away or restarts: worth waiting out, not crashing on.
# (InternalClientError: asyncpg's state on a connection the server dropped mid-operation, seen when
# PostgreSQL was stopped under a running notifier: "cannot switch to state 12".)
OUTAGE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


class PerConnection(Generic[T]):
    """A value kept per connection (or pool), made by `make` on first use: what a process remembers
    of a database (ids it gave out) stays with what talks to that database, so that two databases,
    as in tests, never mix."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._connections: weakref.WeakKeyDictionary[asyncpg.Connection, T] = weakref.WeakKeyDictionary()
        self._pools: dict[int, T] = {}  # pools live as long as their process

    def of(self, conn: asyncpg.Connection | asyncpg.Pool) -> T:
        if isinstance(conn, asyncpg.Pool):
            found = self._pools.get(id(conn))
            if found is None:
                found = self._pools[id(conn)] = self._make()
            return found
        found = self._connections.get(conn)
        if found is None:
            found = self._connections[conn] = self._make()
        return found
