"""The rules in PostgreSQL (table `rules`, processor/control/migrations): the record of every
change. Each change is made in a transaction that publishes it on the rules topic before it
commits (RuleStore.change), so what is stored is what the processors apply."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg

from metrics.v1 import rule_pb2
from runtime import postgres
from runtime.errors import Aborted, NotFound
from runtime.failpoints import Failpoints

COLUMNS = (
    "rule_id, metric_type, sensor_id_prefix, threshold, comparison, count, severity, enabled, version, "
    "create_time, update_time, delete_time, duration_us, clear_count, silence"
)
# What a client may change (UpdateRule's update_mask names these).
MUTABLE = (
    "metric_type",
    "sensor_id_prefix",
    "threshold",
    "comparison",
    "count",
    "severity",
    "enabled",
    "duration",
    "clear_count",
    "silence",
)
# A field whose column has another name.
COLUMN = {"duration": "duration_us"}

Publish = Callable[[str, rule_pb2.Rule | None], Awaitable[None]]


def new_rule_id() -> str:
    return "r-" + secrets.token_hex(8)


def as_rule(row: asyncpg.Record) -> rule_pb2.Rule:
    rule = rule_pb2.Rule(
        rule_id=row["rule_id"], metric_type=row["metric_type"], sensor_id_prefix=row["sensor_id_prefix"],
        threshold=row["threshold"], comparison=row["comparison"], count=row["count"],
        severity=row["severity"], enabled=row["enabled"], version=row["version"],
        clear_count=row["clear_count"],
    )  # fmt: skip
    rule.create_time.FromMicroseconds(row["create_time"])
    rule.update_time.FromMicroseconds(row["update_time"])
    if row["duration_us"]:
        rule.duration.FromMicroseconds(row["duration_us"])
    if row["silence"] is not None:
        rule.silence.ParseFromString(row["silence"])
    return rule


class RuleStore:
    """Rules in PostgreSQL; every change goes through `publish` (the rules topic) before it commits."""

    def __init__(self, pool: asyncpg.Pool, publish: Publish, failpoint: Failpoints | None = None) -> None:
        self._pool = pool
        self._publish = publish
        self._failpoint = failpoint or Failpoints()

    async def seed(self, rules: Iterable[rule_pb2.Rule]) -> bool:
        """Stores `rules` (the environment's) if no rules were ever seeded; True if it did."""
        async with postgres.transaction(self._pool) as conn:
            if await conn.fetchval(
                "INSERT INTO rules_seeded DEFAULT VALUES ON CONFLICT DO NOTHING RETURNING 1"
            ):
                for rule in rules:
                    await self._insert(conn, rule)
                return True
        return False

    async def create(self, rule: rule_pb2.Rule) -> rule_pb2.Rule:
        stored = rule_pb2.Rule()
        stored.CopyFrom(rule)
        stored.rule_id = new_rule_id()
        async with postgres.transaction(self._pool) as conn:
            created = await self._insert(conn, stored)
            self._failpoint("rules.before_commit")  # published, not committed: what reconcile repairs
            return created

    async def get(self, rule_id: str) -> rule_pb2.Rule:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {COLUMNS} FROM rules WHERE rule_id = $1 AND delete_time IS NULL",  # noqa: S608 - ours
                rule_id,
            )
        if row is None:
            raise NotFound(f"no rule {rule_id!r}")
        return as_rule(row)

    async def page(self, metric_type: str, after: tuple[int, str] | None, size: int) -> list[rule_pb2.Rule]:
        """Up to `size` rules, oldest first, after the (create time µs, rule id) `after`."""
        conditions: list[str] = ["delete_time IS NULL"]
        args: list[object] = []
        if metric_type:
            args.append(metric_type)
            conditions.append(f"metric_type = ${len(args)}")
        if after is not None:
            args += after
            conditions.append(f"(create_time, rule_id) > (${len(args) - 1}, ${len(args)})")
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {COLUMNS} FROM rules WHERE {' AND '.join(conditions)} "  # noqa: S608 - ours
                f"ORDER BY create_time, rule_id LIMIT {size}",
                *args,
            )
        return [as_rule(row) for row in rows]

    async def update(self, rule_id: str, changes: dict[str, Any], expected_version: int) -> rule_pb2.Rule:
        """Sets `changes` (fields of MUTABLE); `expected_version` 0 takes any version."""
        names = [COLUMN.get(name, name) for name in changes]
        sets = "".join(f"{name} = ${i}, " for i, name in enumerate(names, start=2))
        async with postgres.transaction(self._pool) as conn:
            await self._lock(conn, rule_id, expected_version)
            row = await conn.fetchrow(
                f"UPDATE rules SET {sets}version = version + 1, update_time = ${len(names) + 2} "  # noqa: S608 - ours
                f"WHERE rule_id = $1 RETURNING {COLUMNS}",
                rule_id, *changes.values(), postgres.now_us(),
            )  # fmt: skip
            rule = as_rule(row)
            await self._publish(rule.rule_id, rule)
            return rule

    async def delete(self, rule_id: str) -> None:
        async with postgres.transaction(self._pool) as conn:
            await self._lock(conn, rule_id, 0)
            await conn.execute(
                "UPDATE rules SET delete_time = $2, version = version + 1 WHERE rule_id = $1",
                rule_id,
                postgres.now_us(),
            )
            await self._publish(rule_id, None)

    async def everything(self) -> dict[str, rule_pb2.Rule | None]:
        """Every rule ever stored, by id: None for a deleted one (what the rules topic should hold)."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(f"SELECT {COLUMNS} FROM rules")  # noqa: S608 - ours
        return {row["rule_id"]: None if row["delete_time"] is not None else as_rule(row) for row in rows}

    async def _lock(self, conn: asyncpg.Connection, rule_id: str, expected_version: int) -> None:
        """Locks the rule's row until the transaction ends (NotFound, or Aborted at another version)."""
        version = await conn.fetchval(
            "SELECT version FROM rules WHERE rule_id = $1 AND delete_time IS NULL FOR UPDATE", rule_id
        )
        if version is None:
            raise NotFound(f"no rule {rule_id!r}")
        if expected_version and expected_version != version:
            raise Aborted(
                f"rule {rule_id} is at version {version}, not {expected_version}: read it again, then retry"
            )

    async def _insert(self, conn: asyncpg.Connection, rule: rule_pb2.Rule) -> rule_pb2.Rule:
        now = postgres.now_us()
        row = await conn.fetchrow(
            f"INSERT INTO rules ({COLUMNS}) "  # noqa: S608 - ours
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $9, NULL, $10, $11, $12) "
            f"RETURNING {COLUMNS}",
            rule.rule_id, rule.metric_type, rule.sensor_id_prefix, rule.threshold, rule.comparison,
            rule.count, rule.severity, rule.enabled if rule.HasField("enabled") else True, now,
            rule.duration.ToMicroseconds(), rule.clear_count,
            rule.silence.SerializeToString(deterministic=True) if rule.HasField("silence") else None,
        )  # fmt: skip
        stored = as_rule(row)
        await self._publish(stored.rule_id, stored)
        return stored
