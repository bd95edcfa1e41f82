"""How the stack's tools, the benchmark and the tests log in to the local stack's servers, with the
passwords `make run` generated (stack/credentials.py)."""

from __future__ import annotations

from typing import Any

import asyncpg
import redis.asyncio as aioredis

from runtime.kafka import KafkaSettings
from stack import credentials
from stack.credentials import Account
from stack.settings import StackSettings


def password(settings: StackSettings, account: Account) -> str:
    return credentials.password(settings.secrets_dir, account)


async def postgres(settings: StackSettings, account: Account, **options: Any) -> asyncpg.Connection:
    """A connection to the metrics database as one of its roles (owner, writer, reader)."""
    return await asyncpg.connect(
        settings.postgres_dsn(account.user), password=password(settings, account), **options
    )


async def postgres_superuser(
    settings: StackSettings, database: str = "postgres", port: int | None = None
) -> asyncpg.Connection:
    """The superuser, through the unix socket that only the stack's own account may use (pg_hba.conf),
    of the primary or of the server on another port (the replica)."""
    return await asyncpg.connect(
        host=str(settings.postgres_socket_dir), port=port or settings.postgres_port, user="postgres",
        database=database, timeout=2,
    )  # fmt: skip


def redis(
    settings: StackSettings, account: Account = credentials.REDIS_ADMIN, **options: Any
) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        settings.redis_url(account.user), password=password(settings, account), **options
    )


def redis_node(settings: StackSettings, port: int, **options: Any) -> aioredis.Redis:
    """The admin on one Redis node (of a cluster: that node only, no redirection)."""
    admin = credentials.REDIS_ADMIN
    return aioredis.Redis(
        host="127.0.0.1", port=port, username=admin.user, password=password(settings, admin), **options
    )


def kafka(settings: StackSettings, account: Account = credentials.KAFKA_ADMIN) -> KafkaSettings:
    """Kafka settings of a principal (runtime.kafka.client_options turns them into client options)."""
    return KafkaSettings(
        kafka_bootstrap_servers=settings.kafka_bootstrap,
        kafka_username=account.user,
        kafka_password=password(settings, account),
    )
