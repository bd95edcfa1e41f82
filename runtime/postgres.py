"""PostgreSQL connections as the services use them: UTC, and times as integer microseconds."""

from __future__ import annotations

import asyncpg

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


def prefix_upper_bound(prefix: str) -> str:
    """The least string above every string that starts with `prefix` (not empty): `col >= prefix AND
    col < bound` is an index range, exact in the code-point collation of the stack's database."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


SERVER_SETTINGS = {"timezone": "UTC"}

# What a call raises when PostgreSQL goes away or restarts: worth waiting out, not crashing on.
# (InternalClientError: asyncpg's state on a connection the server dropped mid-operation, seen when
# PostgreSQL was stopped under a running notifier: "cannot switch to state 12".)
OUTAGE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
