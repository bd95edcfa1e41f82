"""The devices in PostgreSQL (registry.devices, registry/migrations): each change is made in a
transaction that publishes it on the devices topic before it commits, so what is stored is what the
topic's readers learn."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from metrics.v1 import device_pb2
from runtime import postgres
from runtime.compacted import Topic
from runtime.errors import Aborted, AlreadyExists, NotFound
from runtime.failpoints import Failpoints

SCHEMA = "registry"
# A device as the devices topic holds it.
RECORD_COLUMNS = (
    "device_id, sensor_id_prefix, display_name, labels::text AS labels, tier, state, version, create_time, "
    "update_time, delete_time, live_credentials(device_id) AS credentials"
)
# A device as the API answers it: also when it was last heard from and whether it is connected.
COLUMNS = (
    f"{RECORD_COLUMNS}, last_seen(device_id, sensor_id_prefix) AS last_seen_time, "
    "mqtt_connect_time(device_id) AS mqtt_connect_time"
)
# What UpdateDevice may change.
MUTABLE = ("sensor_id_prefix", "display_name", "labels", "tier")
REVOKE_ALL = (
    "UPDATE credentials SET revoke_time = $2 WHERE device_id = $1 AND revoke_time IS NULL "
    "AND expire_time > $2 RETURNING kind"
)
# A credential that does not expire (an MQTT password) expires at the end of what a protobuf
# Timestamp holds: 9999-12-31T23:59:59Z.
NEVER_US = 253_402_300_799 * 1_000_000
# At most this many ids of taken ones in an ALREADY_EXISTS message.
NAMED = 5

# A deleted device's id may be taken again: its row is made anew (its version goes on).
INSERT = f"""
INSERT INTO devices AS d (device_id, sensor_id_prefix, display_name, labels, tier, state, version,
                          create_time, update_time)
SELECT i.device_id, i.sensor_id_prefix, i.display_name, i.labels::jsonb, i.tier,
       {device_pb2.DEVICE_STATE_ENABLED}, 1, $6, $6
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::smallint[])
     AS i (device_id, sensor_id_prefix, display_name, labels, tier)
ON CONFLICT (device_id) DO UPDATE SET
    sensor_id_prefix = excluded.sensor_id_prefix, display_name = excluded.display_name,
    labels = excluded.labels, tier = excluded.tier, state = excluded.state, version = d.version + 1,
    create_time = excluded.create_time, update_time = excluded.update_time, delete_time = NULL
WHERE d.delete_time IS NOT NULL
RETURNING {COLUMNS}
"""  # noqa: S608 - ours


def as_device(row: asyncpg.Record) -> device_pb2.Device:
    device = device_pb2.Device(
        device_id=row["device_id"], sensor_id_prefix=row["sensor_id_prefix"],
        display_name=row["display_name"], labels=json.loads(row["labels"]), tier=row["tier"],
        state=row["state"], version=row["version"],
    )  # fmt: skip
    device.create_time.FromMicroseconds(row["create_time"])
    device.update_time.FromMicroseconds(row["update_time"])
    for credential_id, kind, created_us, expires_us in json.loads(row["credentials"]):
        credential = device.credentials.add(credential_id=credential_id, kind=kind)
        credential.create_time.FromMicroseconds(created_us)
        credential.expire_time.FromMicroseconds(expires_us)
    if row.get("last_seen_time") is not None:
        device.last_seen_time.FromMicroseconds(row["last_seen_time"])
    if row.get("mqtt_connect_time") is not None:
        device.mqtt_connected = True
        device.mqtt_connect_time.FromMicroseconds(row["mqtt_connect_time"])
    return device


def as_record(device: device_pb2.Device) -> device_pb2.Device:
    """The device as the devices topic holds it: without what only answers have (when it was last
    heard from, whether it is connected), which changes all the time."""
    record = device_pb2.Device()
    record.CopyFrom(device)
    record.ClearField("last_seen_time")
    record.ClearField("mqtt_connected")
    record.ClearField("mqtt_connect_time")
    return record


class DeviceStore:
    """Devices in PostgreSQL; every change is published on `topic` before it commits."""

    def __init__(
        self, pool: asyncpg.Pool, topic: Topic[device_pb2.Device], failpoint: Failpoints | None = None
    ) -> None:
        self._pool = pool
        self._topic = topic
        self._failpoint = failpoint or Failpoints()

    async def create(self, devices: Sequence[device_pb2.Device]) -> list[device_pb2.Device]:
        """Creates the devices (ids of their own, checked): all, or none (AlreadyExists)."""
        columns = zip(
            *(
                (d.device_id, d.sensor_id_prefix, d.display_name, json.dumps(dict(d.labels)), d.tier)
                for d in devices
            ),
            strict=True,
        )
        async with postgres.transaction(self._pool) as conn:
            rows = await conn.fetch(INSERT, *map(list, columns), postgres.now_us())
            if len(rows) < len(devices):
                made = {row["device_id"] for row in rows}
                taken = [d.device_id for d in devices if d.device_id not in made]
                shown = ", ".join(repr(t) for t in taken[:NAMED]) + (" ..." if len(taken) > NAMED else "")
                raise AlreadyExists(f"{len(taken)} device id(s) already taken: {shown}; nothing was created")
            created = {row["device_id"]: as_device(row) for row in rows}
            await self._publish(created.values())
            self._failpoint("registry.before_commit")  # published, not committed: what reconcile repairs
            return [created[d.device_id] for d in devices]

    async def get(self, device_id: str) -> device_pb2.Device:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {COLUMNS} FROM devices WHERE device_id = $1 AND delete_time IS NULL",  # noqa: S608 - ours
                device_id,
            )
        if row is None:
            raise NotFound(f"no device {device_id!r}")
        return as_device(row)

    async def page(
        self,
        prefix: str,
        labels: Mapping[str, str],
        state: int,
        after: str | None,
        size: int,
        silent_since_us: int | None = None,
    ) -> list[device_pb2.Device]:
        """Up to `size` devices by id, after the id `after` (and, with `silent_since_us`, without a
        reading stored since then)."""
        conditions: list[str] = ["delete_time IS NULL"]
        args: list[object] = []
        if prefix:
            # A range of the primary key; starts_with makes it exact in any collation.
            args += [prefix, postgres.prefix_upper_bound(prefix)]
            conditions.append(f"device_id >= ${len(args) - 1} AND device_id < ${len(args)}")
            conditions.append(f"starts_with(device_id, ${len(args) - 1})")
        if labels:
            args.append(json.dumps(dict(labels)))
            conditions.append(f"labels @> ${len(args)}::jsonb")
        if state:
            args.append(state)
            conditions.append(f"state = ${len(args)}")
        if silent_since_us is not None:
            args.append(silent_since_us)
            conditions.append(f"(last_seen(device_id, sensor_id_prefix) < ${len(args)}) IS NOT FALSE")
        if after is not None:
            args.append(after)
            conditions.append(f"device_id > ${len(args)}")
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {COLUMNS} FROM devices WHERE {' AND '.join(conditions)} "  # noqa: S608 - ours
                f"ORDER BY device_id LIMIT {size}",
                *args,
            )
        return [as_device(row) for row in rows]

    async def update(
        self, device_id: str, changes: dict[str, Any], expected_version: int
    ) -> device_pb2.Device:
        """Sets `changes` (fields of MUTABLE); `expected_version` 0 takes any version."""
        values = {name: json.dumps(value) if name == "labels" else value for name, value in changes.items()}
        sets = "".join(
            f"{name} = ${i}{'::jsonb' if name == 'labels' else ''}, "
            for i, name in enumerate(values, start=2)
        )
        async with postgres.transaction(self._pool) as conn:
            await self._lock(conn, device_id, expected_version)
            row = await conn.fetchrow(
                f"UPDATE devices SET {sets}version = version + 1, update_time = ${len(values) + 2} "  # noqa: S608 - ours
                f"WHERE device_id = $1 RETURNING {COLUMNS}",
                device_id, *values.values(), postgres.now_us(),
            )  # fmt: skip
            device = as_device(row)
            await self._publish([device])
            return device

    async def set_state(self, device_id: str, state: int) -> device_pb2.Device:
        """Enables or disables a device; one already in that state is left as it is."""
        async with postgres.transaction(self._pool) as conn:
            await self._lock(conn, device_id, 0)
            row = await conn.fetchrow(
                f"UPDATE devices SET state = $2, version = version + 1, update_time = $3 "  # noqa: S608 - ours
                f"WHERE device_id = $1 AND state <> $2 RETURNING {COLUMNS}",
                device_id, state, postgres.now_us(),
            )  # fmt: skip
            if row is None:
                row = await conn.fetchrow(f"SELECT {COLUMNS} FROM devices WHERE device_id = $1", device_id)  # noqa: S608 - ours
                return as_device(row)
            device = as_device(row)
            await self._publish([device])
            return device

    async def delete(self, device_id: str) -> set[int]:
        """Deletes the device and revokes its credentials; returns the kinds of those it had."""
        async with postgres.transaction(self._pool) as conn:
            await self._lock(conn, device_id, 0)
            now = postgres.now_us()
            await conn.execute(
                "UPDATE devices SET delete_time = $2, version = version + 1 WHERE device_id = $1",
                device_id,
                now,
            )
            revoked = {row["kind"] for row in await conn.fetch(REVOKE_ALL, device_id, now)}
            await self._topic.publish(device_id, None)
            return revoked

    async def issue(
        self, device_id: str, kind: int, ttl_us: int | None, replace: bool = False
    ) -> tuple[device_pb2.Device, str]:
        """Records a new credential of the device (`ttl_us` None: it does not expire), revoking its
        other live ones of the kind if `replace`; returns the device (listing it) and its id."""
        credential_id = "c-" + secrets.token_hex(8)
        async with postgres.transaction(self._pool) as conn:
            await self._lock(conn, device_id, 0)
            now = postgres.now_us()
            if ttl_us is None:
                ttl_us = NEVER_US - now
            if replace:
                await conn.execute(
                    "UPDATE credentials SET revoke_time = $3 WHERE device_id = $1 AND kind = $2 "
                    "AND revoke_time IS NULL",
                    device_id, kind, now,
                )  # fmt: skip
            await conn.execute(
                "INSERT INTO credentials (credential_id, device_id, kind, create_time, expire_time) "
                "VALUES ($1, $2, $3, $4, $5)",
                credential_id, device_id, kind, now, now + ttl_us,
            )  # fmt: skip
            return await self._changed(conn, device_id, now), credential_id

    async def revoke(self, device_id: str, credential_id: str) -> tuple[device_pb2.Device, int]:
        """Revokes a live credential of the device (NotFound if it has none of that id); returns the
        device and the credential's kind."""
        async with postgres.transaction(self._pool) as conn:
            await self._lock(conn, device_id, 0)
            now = postgres.now_us()
            kind = await conn.fetchval(
                "UPDATE credentials SET revoke_time = $3 WHERE credential_id = $1 AND device_id = $2 "
                "AND revoke_time IS NULL AND expire_time > $3 RETURNING kind",
                credential_id, device_id, now,
            )  # fmt: skip
            if kind is None:
                raise NotFound(f"device {device_id!r} has no live credential {credential_id!r}")
            return await self._changed(conn, device_id, now), kind

    async def accounts(self, kind: int) -> list[tuple[str, bool, bool]]:
        """Every device that ever had a credential of `kind`: its id, whether it has a live one (and
        is not deleted), and whether it is enabled."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT c.device_id, bool_or(d.delete_time IS NULL AND c.revoke_time IS NULL "
                "AND c.expire_time > now()) AS live, bool_and(d.state = $2) AS enabled "
                "FROM credentials c JOIN devices d USING (device_id) WHERE c.kind = $1 GROUP BY 1 ORDER BY 1",
                kind, device_pb2.DEVICE_STATE_ENABLED,
            )  # fmt: skip
        return [(r["device_id"], r["live"], r["enabled"]) for r in rows]

    async def find(self, device_id: str) -> device_pb2.Device | None:
        """The device as its record holds it, or None if there is none (deleted)."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {RECORD_COLUMNS} FROM devices WHERE device_id = $1 AND delete_time IS NULL",  # noqa: S608 - ours
                device_id,
            )
        return None if row is None else as_device(row)

    async def _changed(self, conn: asyncpg.Connection, device_id: str, now: int) -> device_pb2.Device:
        """A new version of the device (its credentials changed), published."""
        row = await conn.fetchrow(
            f"UPDATE devices SET version = version + 1, update_time = $2 "  # noqa: S608 - ours
            f"WHERE device_id = $1 RETURNING {COLUMNS}",
            device_id, now,
        )  # fmt: skip
        device = as_device(row)
        await self._publish([device])
        return device

    async def everything(self) -> dict[str, device_pb2.Device | None]:
        """Every device ever stored, by id: None for a deleted one (what the devices topic should hold)."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(f"SELECT {RECORD_COLUMNS} FROM devices")  # noqa: S608 - ours
        return {row["device_id"]: None if row["delete_time"] is not None else as_device(row) for row in rows}

    async def _publish(self, devices: Iterable[device_pb2.Device]) -> None:
        """Publishes the devices, all at once, and waits until Kafka has every one."""
        sent = [await self._topic.send(device.device_id, as_record(device)) for device in devices]
        await asyncio.gather(*sent)

    async def _lock(self, conn: asyncpg.Connection, device_id: str, expected_version: int) -> None:
        """Locks the device's row until the transaction ends (NotFound, or Aborted at another version)."""
        version = await conn.fetchval(
            "SELECT version FROM devices WHERE device_id = $1 AND delete_time IS NULL FOR UPDATE", device_id
        )
        if version is None:
            raise NotFound(f"no device {device_id!r}")
        if expected_version and expected_version != version:
            raise Aborted(
                f"device {device_id} is at version {version}, not {expected_version}: "
                "read it again, then retry"
            )
