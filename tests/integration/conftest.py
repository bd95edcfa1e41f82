"""Fixtures of the integration tests that need a database or a Redis Cluster of their own."""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from processor.stream.redis_nodes import RedisNodes
from runtime.kafka import client_options
from stack import access, credentials, prepare
from stack import settings as stack_settings
from stack.redis_cluster import LocalCluster
from tests.services import Topics, private_topics
from tests.target import Target

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


# A Redis Cluster of the tests' own (stack/redis_cluster.py): 3 masters with a replica each, on
# ports 27100-27105 (bus ports 17100-17105), with the local stack's ACL (admin, and the processor's
# user limited as there); each process of a parallel run (python -m tests) has its own, 10 ports
# further per process (PYTEST_XDIST_WORKER gw0, gw1, ...). Below Linux's ephemeral ports
# (32768-60999): at 57100 a client connection's local port once took a node's port first ("Address
# already in use").
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
CLUSTER_PORTS = range(27100 + 10 * WORKER, 27106 + 10 * WORKER)


@dataclass(frozen=True)
class ClusterUnderTest:
    cluster: LocalCluster
    admin_url: str
    processor_url: str
    admin_password: str
    processor_password: str

    def nodes(self, *, processor: bool = False, replicas: int = 1) -> RedisNodes:
        """A client of the cluster as the processor makes it (processor/service.py)."""
        url, password = (
            (self.processor_url, self.processor_password)
            if processor
            else (self.admin_url, self.admin_password)
        )
        return RedisNodes.connect(
            url, password, cluster=True, replicas=replicas, socket_timeout=10, socket_connect_timeout=2
        )


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterUnderTest]:
    admin_password, processor_password = secrets.token_hex(16), secrets.token_hex(16)

    def digest(password: str) -> str:
        return hashlib.sha256(password.encode()).hexdigest()

    cluster = LocalCluster(
        CLUSTER_PORTS,
        tmp_path_factory.mktemp("redis-cluster"),
        node_timeout_ms=1000,
        users=[
            prepare.REDIS_DEFAULT_USER,
            f"user admin on #{digest(admin_password)} ~* &* +@all",
            f"user processor on #{digest(processor_password)} {prepare.REDIS_PROCESSOR_RULES}",
        ],
        admin_password=admin_password,
    )
    try:
        cluster.start()
        first = cluster.nodes[0].address
        yield ClusterUnderTest(
            cluster,
            f"redis://admin@{first}/0",
            f"redis://processor@{first}/0",
            admin_password,
            processor_password,
        )
    finally:
        cluster.stop()


@pytest.fixture
async def cluster_redis(redis_cluster: ClusterUnderTest) -> AsyncIterator[RedisNodes]:
    """The test cluster as the processor's user sees it, waiting for a replica of each write."""
    nodes = redis_cluster.nodes(processor=True)
    await nodes.start()
    try:
        yield nodes
    finally:
        await nodes.aclose()


@pytest.fixture
async def cluster_admin(redis_cluster: ClusterUnderTest) -> AsyncIterator[RedisNodes]:
    """The test cluster as its admin: to look at what the processor's user wrote."""
    nodes = redis_cluster.nodes()
    await nodes.start()
    try:
        yield nodes
    finally:
        await nodes.aclose()


@pytest.fixture
async def rules_topic(target: Target) -> AsyncIterator[str]:
    """A private rules topic: a processor started with it takes every rule PostgreSQL holds."""
    topic = f"test-rules-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(**client_options(target.kafka()))
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    try:
        yield topic
    finally:
        await admin.delete_topics([topic])
        await admin.close()


@pytest.fixture
async def topics(target: Target) -> AsyncIterator[Topics]:
    """Private metrics, events and dead-letter topics and a consumer group (tests/services.py)."""
    async with private_topics(target) as made:
        yield made
