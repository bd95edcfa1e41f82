"""The notifier's tables (schema notifier, notifier/migrations): subscriptions,
and deliveries, an outbox of (subscription, event) pairs that the dispatcher works off.

Queueing matches events against the subscriptions in PostgreSQL, in the transaction that queues
them, so a subscription receives every matching event read after it was created. Each pair is queued
once (a Kafka record read again queues nothing twice). A subscription's deliveries of one sensor go
out one at a time, in the order they were queued: only the pending delivery with the lowest `seq` of
a (subscription, sensor) queue is ever tried.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

# The schema of the tables (the notifier's connections have it as their search_path).
SCHEMA = "notifier"
# metrics.v1.DeliveryState, as the subscriptions' state column holds it (the SQL below writes the
# numbers).
HEALTHY, FAILING, DEAD_LETTERED = 1, 2, 3
# A delivery's state (written as numbers in the SQL below too).
PENDING, DELIVERED, DEAD = 1, 2, 3
# seq = round * ROUND_SPAN + the event's place in its round: rounds hold fewer events than this.
ROUND_SPAN = 65_536


@dataclass(frozen=True)
class QueuedEvent:
    """An event read from Kafka, as queueing needs it."""

    event_id: str
    sensor_id: str
    kind: int
    severity: int  # 0 when unknown: matches only subscriptions without a minimum
    event: bytes  # the metrics.v1.Event, as read
    detect_time_us: int


@dataclass(frozen=True)
class Claimed:
    """A delivery whose attempt this notifier makes now (it holds the lease)."""

    subscription_id: str
    event_id: str
    event: bytes
    attempt: int
    detect_time_us: int
    url: str
    secret: str


QUEUE = """
INSERT INTO deliveries (subscription_id, event_id, sensor_id, seq, event, detect_time)
SELECT s.subscription_id, e.event_id, e.sensor_id, r.round * 65536 + e.n, e.event, e.detect_time
FROM unnest($1::uuid[], $2::text[], $3::smallint[], $4::smallint[], $5::bytea[], $6::timestamptz[])
     WITH ORDINALITY AS e (event_id, sensor_id, kind, severity, event, detect_time, n)
CROSS JOIN (SELECT nextval('delivery_rounds') AS round) r
JOIN subscriptions s
  ON s.state <> 3
 AND starts_with(e.sensor_id, s.sensor_id_prefix)
 AND (cardinality(s.kinds) = 0 OR e.kind = ANY (s.kinds))
 AND (s.minimum_severity = 0 OR e.severity BETWEEN 1 AND s.minimum_severity)
ON CONFLICT DO NOTHING
"""


async def queue(pool: asyncpg.Pool, events: Sequence[QueuedEvent]) -> int:
    """Queues a delivery of each event to each subscription it matches; how many were queued."""
    if len(events) >= ROUND_SPAN:
        raise ValueError(f"a round of {len(events)} events: at most {ROUND_SPAN - 1}")
    status = await pool.execute(
        QUEUE,
        [e.event_id for e in events], [e.sensor_id for e in events], [e.kind for e in events],
        [e.severity for e in events], [e.event for e in events], [e.detect_time_us for e in events],
    )  # fmt: skip
    return int(status.rsplit(" ", 1)[1])


# Heads of the queues that are due and not in flight, oldest due first; the re-check of the row's
# state and lease in the UPDATE makes two notifiers never claim one delivery.
CLAIM = """
WITH heads AS (
    SELECT DISTINCT ON (subscription_id, sensor_id) subscription_id, event_id, next_attempt_time, lease_until
    FROM deliveries WHERE state = 1
    ORDER BY subscription_id, sensor_id, seq
), due AS (
    SELECT subscription_id, event_id FROM heads
    WHERE next_attempt_time <= now() AND (lease_until IS NULL OR lease_until < now())
    ORDER BY next_attempt_time LIMIT $1
)
UPDATE deliveries d SET lease_until = now() + make_interval(secs => $2), attempts = d.attempts + 1
FROM due, subscriptions s
WHERE d.subscription_id = due.subscription_id AND d.event_id = due.event_id
  AND s.subscription_id = d.subscription_id
  AND d.state = 1 AND (d.lease_until IS NULL OR d.lease_until < now())
RETURNING d.subscription_id, d.event_id, d.event, d.attempts, d.detect_time, s.url, s.secret
"""


async def claim(pool: asyncpg.Pool, limit: int, lease_s: float) -> list[Claimed]:
    """Up to `limit` deliveries to attempt now, leased for `lease_s` seconds."""
    rows = await pool.fetch(CLAIM, limit, lease_s)
    return [
        Claimed(
            subscription_id=r["subscription_id"].hex,
            event_id=r["event_id"].hex,
            event=r["event"],
            attempt=r["attempts"],
            detect_time_us=r["detect_time"],
            url=r["url"],
            secret=r["secret"],
        )
        for r in rows
    ]


DELIVERED_SQL = """
WITH done AS (
    UPDATE deliveries SET state = 2, done_time = now(), lease_until = NULL, last_error = ''
    WHERE subscription_id = $1 AND event_id = $2 AND state <> 2
    RETURNING 1
)
UPDATE subscriptions SET
    last_success_time = now(),
    delivered_count = delivered_count + (SELECT count(*) FROM done),
    consecutive_failures = CASE WHEN state = 3 THEN consecutive_failures ELSE 0 END,
    state = CASE WHEN state = 3 THEN state ELSE 1 END
WHERE subscription_id = $1
"""


async def delivered(pool: asyncpg.Pool, subscription_id: str, event_id: str) -> None:
    """The delivery succeeded: done, and its subscription healthy (a dead-lettered one stays so
    until it is resumed)."""
    await pool.execute(DELIVERED_SQL, subscription_id, event_id)


FAILED_SQL = """
WITH retry AS (
    UPDATE deliveries SET next_attempt_time = now() + make_interval(secs => $3), lease_until = NULL,
        last_error = $4
    WHERE subscription_id = $1 AND event_id = $2 AND state = 1
    RETURNING 1
)
UPDATE subscriptions SET
    consecutive_failures = consecutive_failures + 1,
    last_error = $4,
    last_failure_time = now(),
    state = CASE WHEN consecutive_failures + 1 >= $5 THEN 3 ELSE 2 END,
    dead_letter_time = CASE WHEN consecutive_failures + 1 >= $5 THEN now() END
WHERE subscription_id = $1 AND state <> 3
RETURNING state
"""

DEAD_LETTER = """
UPDATE deliveries SET state = 3, lease_until = NULL, done_time = now()
WHERE subscription_id = $1 AND state = 1
"""


async def failed(
    pool: asyncpg.Pool, subscription_id: str, event_id: str, retry_in_s: float, error: str, limit: int
) -> int:
    """The attempt failed: the delivery is tried again in `retry_in_s`, and its subscription is failing,
    or dead-lettered at `limit` failures in a row, with all it had pending. Returns how many
    deliveries were dead-lettered (0 unless this failure was the last straw)."""
    async with pool.acquire() as conn, conn.transaction():
        state = await conn.fetchval(FAILED_SQL, subscription_id, event_id, retry_in_s, error, limit)
        if state != DEAD_LETTERED:
            return 0
        status = await conn.execute(DEAD_LETTER, subscription_id)
        return int(status.rsplit(" ", 1)[1])


async def purge_delivered(pool: asyncpg.Pool, older_than_s: float) -> int:
    status = await pool.execute(
        "DELETE FROM deliveries WHERE state = 2 AND done_time < now() - make_interval(secs => $1)",
        older_than_s,
    )
    return int(status.rsplit(" ", 1)[1])


async def counts(pool: asyncpg.Pool) -> tuple[dict[int, int], int]:
    """Subscriptions by state, and the pending deliveries of all."""
    rows = await pool.fetch("SELECT state, count(*) AS n FROM subscriptions GROUP BY state")
    pending = await pool.fetchval("SELECT count(*) FROM deliveries WHERE state = 1")
    return {r["state"]: r["n"] for r in rows}, pending


# --- the API's --------------------------------------------------------------------------------------

COLUMNS = """
s.subscription_id, s.url, s.sensor_id_prefix, s.kinds, s.minimum_severity, s.create_time, s.state,
s.consecutive_failures, s.last_error, s.last_failure_time, s.last_success_time, s.dead_letter_time,
s.delivered_count,
(SELECT count(*) FROM deliveries d WHERE d.subscription_id = s.subscription_id AND d.state = 1)
    AS pending_count,
(SELECT count(*) FROM deliveries d WHERE d.subscription_id = s.subscription_id AND d.state = 3)
    AS dead_lettered_count
"""


@dataclass(frozen=True)
class NewSubscription:
    url: str
    secret: str
    sensor_id_prefix: str
    kinds: tuple[int, ...]
    minimum_severity: int


async def create(pool: asyncpg.Pool, new: NewSubscription) -> asyncpg.Record:
    subscription_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO subscriptions (subscription_id, url, secret, sensor_id_prefix, kinds, minimum_severity)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        subscription_id, new.url, new.secret, new.sensor_id_prefix, list(new.kinds), new.minimum_severity,
    )  # fmt: skip
    row = await get(pool, subscription_id.hex)
    assert row is not None
    return row


async def get(pool: asyncpg.Pool, subscription_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        f"SELECT {COLUMNS} FROM subscriptions s WHERE s.subscription_id = $1",  # noqa: S608 - ours
        subscription_id,
    )


async def page(pool: asyncpg.Pool, after: tuple[int, str] | None, size: int) -> list[asyncpg.Record]:
    """Up to `size` subscriptions after (create_time, id), oldest first."""
    if after is None:
        rows: list[asyncpg.Record] = await pool.fetch(
            f"SELECT {COLUMNS} FROM subscriptions s"  # noqa: S608 - ours
            " ORDER BY s.create_time, s.subscription_id LIMIT $1",
            size,
        )
        return rows
    rows = await pool.fetch(
        f"SELECT {COLUMNS} FROM subscriptions s"  # noqa: S608 - ours
        " WHERE (s.create_time, s.subscription_id) > ($1, $2::uuid)"
        " ORDER BY s.create_time, s.subscription_id LIMIT $3",
        after[0], after[1], size,
    )  # fmt: skip
    return rows


async def delete(pool: asyncpg.Pool, subscription_id: str) -> bool:
    status = await pool.execute("DELETE FROM subscriptions WHERE subscription_id = $1", subscription_id)
    return bool(status != "DELETE 0")


async def deliveries(
    pool: asyncpg.Pool, subscription_id: str, state: int, before: int | None, size: int
) -> list[asyncpg.Record]:
    """Up to `size` of the subscription's deliveries (in `state`, unless 0), the most recently read
    first, before `seq` `before`."""
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT seq, event, state, attempts, last_error, next_attempt_time, done_time FROM deliveries"
        " WHERE subscription_id = $1 AND ($2 = 0 OR state = $2) AND ($3::bigint IS NULL OR seq < $3)"
        " ORDER BY seq DESC LIMIT $4",
        subscription_id, state, before, size,
    )  # fmt: skip
    return rows


async def resume(pool: asyncpg.Pool, subscription_id: str) -> asyncpg.Record | None:
    """A dead-lettered subscription healthy again, its dead-lettered deliveries pending (in their
    order); any other is left as it is. None if there is no such subscription."""
    async with pool.acquire() as conn, conn.transaction():
        resumed = await conn.fetchval(
            "UPDATE subscriptions SET state = 1, consecutive_failures = 0, dead_letter_time = NULL"
            " WHERE subscription_id = $1 AND state = 3 RETURNING 1",
            subscription_id,
        )
        if resumed:
            await conn.execute(
                "UPDATE deliveries SET state = 1, attempts = 0, next_attempt_time = now(),"
                " lease_until = NULL, done_time = NULL WHERE subscription_id = $1 AND state = 3",
                subscription_id,
            )
        return await conn.fetchrow(
            f"SELECT {COLUMNS} FROM subscriptions s WHERE s.subscription_id = $1",  # noqa: S608 - ours
            subscription_id,
        )
