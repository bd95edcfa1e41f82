"""What each server of the cluster topology is at the moment: PostgreSQL primary or replica, Redis
master or replica (and which slots), Kafka broker leading how many partitions, and the active
controller. Roles change when a part fails over: `make status` asks each part."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient

from runtime.kafka import client_options
from stack import access, probes
from stack.parts import Part
from stack.settings import StackSettings

T = TypeVar("T")


async def of(settings: StackSettings, all_parts: list[Part]) -> dict[str, str]:
    """{part name: its role} for the servers that answer; the others are left out."""
    servers = [p for p in all_parts if p.what in ("postgres", "redis")]
    answers = await asyncio.gather(*(_safely(_role(settings, p)) for p in servers))
    found = {p.name: a for p, a in zip(servers, answers, strict=True) if a}
    found |= await _safely(_kafka(settings, [p for p in all_parts if p.what == "kafka"])) or {}
    return found


async def _safely(answer: Awaitable[T]) -> T | None:
    try:
        return await asyncio.wait_for(answer, 5)
    except Exception:  # noqa: BLE001 - a part that does not answer has no role to show
        return None


async def _role(settings: StackSettings, part: Part) -> str:
    if part.what == "postgres":
        conn = await access.postgres_superuser(settings, port=part.port)
        try:
            return "replica" if await conn.fetchval("SELECT pg_is_in_recovery()") else "primary"
        finally:
            await conn.close()
    client = access.redis_node(settings, part.port, socket_timeout=3, socket_connect_timeout=2)
    try:
        role: Any = (await client.execute_command("ROLE"))[0]  # type: ignore[no-untyped-call]
        if (role.decode() if isinstance(role, bytes) else role) != "master":
            return "replica"
        ranges: Any = await client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        slots = sum(int(r[1]) - int(r[0]) + 1 for r in ranges if int(r[2][1]) == part.port)
        return f"master, {slots:,} slots"
    finally:
        await client.aclose()


async def _kafka(settings: StackSettings, brokers: list[Part]) -> dict[str, str]:
    """Each broker: the partitions it leads, and whether it is the active controller (its metrics say)."""
    admin = AIOKafkaAdminClient(**client_options(access.kafka(settings)), request_timeout_ms=3000)
    await admin.start()
    try:
        topics = await admin.describe_topics(await admin.list_topics())
    finally:
        await admin.close()
    leaders = Counter(p["leader"] for t in topics for p in t["partitions"])
    total = sum(leaders.values())
    found = {}
    for number, part in enumerate(brokers, start=1):
        role = f"leads {leaders.get(number, 0)}/{total} partitions"
        if await _safely(_active_controller(settings, number)):
            role += ", controller"
        found[part.name] = role
    return found


async def _active_controller(settings: StackSettings, node_id: int) -> bool:
    broker = settings.kafka_brokers[node_id - 1]
    status, body = await probes.http_get(broker.metrics_port, "/metrics")
    return status == 200 and "\nkafka_controller_kafkacontroller_activecontrollercount 1.0" in f"\n{body}"
