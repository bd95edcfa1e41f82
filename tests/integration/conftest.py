"""Fixtures of the integration tests that need a database of their own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from stack import access, credentials
from stack import settings as stack_settings

Connect = Callable[..., Awaitable[asyncpg.Connection]]


@pytest.fixture
async def scratch_connect() -> AsyncIterator[Connect]:
    """Opens connections, as the schema's owner, to a database of the test's own, dropped after
    (migrations name schemas of their own, such as the notifier's, so a scratch schema of the
    stack's database would not do). Options are asyncpg.connect's."""
    stack = stack_settings.load()
    name = f"test_{uuid.uuid4().hex[:10]}"
    admin = await access.postgres_superuser(stack)
    await admin.execute(f"CREATE DATABASE {name} OWNER {credentials.POSTGRES_OWNER.user}")

    async def connect(**options: Any) -> asyncpg.Connection:
        return await access.postgres(stack, credentials.POSTGRES_OWNER, database=name, **options)

    try:
        yield connect
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


@pytest.fixture
async def scratch_database(scratch_connect: Connect) -> AsyncIterator[asyncpg.Connection]:
    """The schema's owner connected to a database of its own (scratch_connect's)."""
    conn = await scratch_connect()
    try:
        yield conn
    finally:
        await conn.close()
