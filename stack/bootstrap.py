"""What the servers must hold before the services start: database roles and the Kafka topics."""

from __future__ import annotations

import contextlib

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stack.settings import StackSettings
from stack.system import say


async def database(settings: StackSettings) -> None:
    """Roles `metrics` (owns the schema; the saver) and `metrics_reader` (read-only; the assessor)."""
    conn = await asyncpg.connect(
        host="127.0.0.1", port=settings.postgres_port, user="postgres", database="postgres"
    )
    try:
        roles = {r["rolname"] for r in await conn.fetch("SELECT rolname FROM pg_roles")}
        if "metrics" not in roles:
            await conn.execute("CREATE ROLE metrics LOGIN")
        if "metrics_reader" not in roles:
            await conn.execute("CREATE ROLE metrics_reader LOGIN")
            await conn.execute("ALTER ROLE metrics_reader SET default_transaction_read_only = on")
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'metrics'"):
            say("Creating database metrics")
            await conn.execute("CREATE DATABASE metrics OWNER metrics")
    finally:
        await conn.close()
    # The reader may read whatever the owner's migrations create, and nothing more.
    conn = await asyncpg.connect(
        host="127.0.0.1", port=settings.postgres_port, user="postgres", database="metrics"
    )
    try:
        await conn.execute(
            """
            REVOKE CREATE ON SCHEMA public FROM PUBLIC;
            GRANT USAGE ON SCHEMA public TO metrics_reader;
            GRANT SELECT ON ALL TABLES IN SCHEMA public TO metrics_reader;
            ALTER DEFAULT PRIVILEGES FOR ROLE metrics IN SCHEMA public
                GRANT SELECT ON TABLES TO metrics_reader;
            """
        )
    finally:
        await conn.close()


async def topics(settings: StackSettings) -> None:
    """Creates the topics with explicit partition counts; warns when an existing one differs."""
    wanted = {"metrics": settings.metrics_partitions, "events": settings.events_partitions, "metrics.dlq": 1}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, n, 1) for name, n in wanted.items() if name not in existing]
        if missing:
            say(
                "Creating Kafka topics: "
                + ", ".join(f"{t.name} ({t.num_partitions} partitions)" for t in missing)
            )
            with contextlib.suppress(TopicAlreadyExistsError):  # another `make run` was quicker
                await admin.create_topics(missing)
        for description in await admin.describe_topics(list(wanted)):
            name, count = description["topic"], len(description["partitions"])
            if count != wanted[name]:
                say(f"warning: topic {name} has {count} partitions, settings say {wanted[name]} (left as is)")
    finally:
        await admin.close()
