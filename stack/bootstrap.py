"""What the servers must hold before the services start: database roles, Kafka's users, ACLs and topics."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from runtime import kafka
from stack import access, credentials, prepare
from stack.credentials import Account
from stack.settings import StackSettings
from stack.system import SetupError, say

# The owner of the schema (every service's migrations), and the services' roles: the saver's writer,
# the assessor's reader, the processor's, the notifier's, the registry's. What each may do in the
# database, the migrations of the tables' owners grant (runtime/migrations.py).
OWNER, WRITER, READER = credentials.POSTGRES_OWNER, credentials.POSTGRES_WRITER, credentials.POSTGRES_READER
PROCESSOR, NOTIFIER = credentials.POSTGRES_PROCESSOR, credentials.POSTGRES_NOTIFIER
REGISTRY = credentials.POSTGRES_REGISTRY
MONITOR = credentials.POSTGRES_MONITOR


async def database(settings: StackSettings) -> None:
    """The roles with their passwords, the database, and what each role may do in it. Run at every
    start: it also brings a stack made before passwords (with `trust`) to the rules of pg_hba.conf."""
    conn = await access.postgres_superuser(settings)
    try:
        roles = {r["rolname"] for r in await conn.fetch("SELECT rolname FROM pg_roles")}
        for account in (OWNER, WRITER, READER, PROCESSOR, NOTIFIER, REGISTRY, MONITOR):
            if account.user not in roles:
                await conn.execute(f"CREATE ROLE {account.user} LOGIN")
            # A utility statement takes no parameters: format() quotes the password as a literal.
            alter = await conn.fetchval(
                "SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)",
                account.user, access.password(settings, account),
            )  # fmt: skip
            await conn.execute(alter)
        for account in (READER, MONITOR):
            await conn.execute(f"ALTER ROLE {account.user} SET default_transaction_read_only = on")
        # The exporter's: every statistics view, no table of the data.
        await conn.execute(f"GRANT pg_monitor TO {MONITOR.user}")
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'metrics'"):
            say("Creating database metrics")
            await conn.execute(f"CREATE DATABASE metrics OWNER {OWNER.user}")
        # pg_hba.conf may have just been rewritten (stack/prepare.py) under a running server.
        await conn.fetchval("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    # Only the owner may create anything in the schema (temporary tables, which the saver stages rows
    # in, are not in it); what the services' roles may do with the tables, their owners' migrations say.
    conn = await access.postgres_superuser(settings, "metrics")
    try:
        await conn.execute(
            f"""
            REVOKE CREATE ON SCHEMA public FROM PUBLIC;
            GRANT USAGE ON SCHEMA public TO {READER.user}, {WRITER.user}, {PROCESSOR.user};
            """
        )
    finally:
        await conn.close()


# What each service's principal may do; nothing else is allowed (admin, a super user, excepted).
# READ and WRITE imply DESCRIBE; WRITE on a topic also lets an idempotent producer get its id.
KAFKA_ACLS: tuple[tuple[Account, str, str, str], ...] = (
    (credentials.KAFKA_RECEIVER, "TOPIC", "metrics", "WRITE"),
    # Every receiver reads the whole devices topic (no group): the devices whose tokens it refuses.
    (credentials.KAFKA_RECEIVER, "TOPIC", "devices", "READ"),
    # The MQTT bridge writes readings as the receiver does, and dead-letters the payloads it cannot use.
    (credentials.KAFKA_BRIDGE, "TOPIC", "metrics", "WRITE"),
    (credentials.KAFKA_BRIDGE, "TOPIC", "metrics.dlq", "WRITE"),
    # In strict mode (METRICS_REQUIRE_REGISTERED_DEVICES) it reads the devices topic whole, as receivers do.
    (credentials.KAFKA_BRIDGE, "TOPIC", "devices", "READ"),
    (credentials.KAFKA_PROCESSOR, "TOPIC", "metrics", "READ"),
    (credentials.KAFKA_PROCESSOR, "GROUP", "processor", "READ"),
    (credentials.KAFKA_PROCESSOR, "TOPIC", "events", "WRITE"),
    (credentials.KAFKA_PROCESSOR, "TOPIC", "metrics.dlq", "WRITE"),
    # The rules: every processor reads the whole topic (no group) and publishes the changes it stores.
    (credentials.KAFKA_PROCESSOR, "TOPIC", "rules", "READ"),
    (credentials.KAFKA_PROCESSOR, "TOPIC", "rules", "WRITE"),
    # The devices (no group), whose silence its silence rules watch.
    (credentials.KAFKA_PROCESSOR, "TOPIC", "devices", "READ"),
    (credentials.KAFKA_SAVER, "TOPIC", "metrics", "READ"),
    (credentials.KAFKA_SAVER, "TOPIC", "events", "READ"),
    (credentials.KAFKA_SAVER, "GROUP", "saver", "READ"),
    (credentials.KAFKA_SAVER, "TOPIC", "metrics.dlq", "WRITE"),
    (credentials.KAFKA_NOTIFIER, "TOPIC", "events", "READ"),
    (credentials.KAFKA_NOTIFIER, "GROUP", "notifier", "READ"),
    (credentials.KAFKA_NOTIFIER, "TOPIC", "metrics.dlq", "WRITE"),
    # The live watch: every assessor reads every partition from its end (no group, no offsets).
    (credentials.KAFKA_ASSESSOR, "TOPIC", "events", "READ"),
    # The devices: the registry publishes the changes it stores, and reads the topic whole at start.
    (credentials.KAFKA_REGISTRY, "TOPIC", "devices", "READ"),
    (credentials.KAFKA_REGISTRY, "TOPIC", "devices", "WRITE"),
)


def kafka_users(settings: StackSettings) -> None:
    """Adds the SCRAM users to a cluster made without them (prepare.KAFKA_ENROLMENT): through the
    broker, where admin may log in with PLAIN meanwhile (the controller does not take this call)."""
    admin = access.password(settings, credentials.KAFKA_ADMIN)
    _security(settings, "Kafka's SCRAM users", [
        f"config bootstrap.servers={settings.kafka_bootstrap}",
        "config sasl.mechanism=PLAIN",
        f"config sasl.jaas.config={_plain_login(admin)}",
        *(f"user {a.user} {access.password(settings, a)}" for a in credentials.KAFKA_ACCOUNTS),
    ])  # fmt: skip


def kafka_acls(settings: StackSettings) -> None:
    """Kafka's ACLs, created through the controller (where admin logs in with PLAIN), only when they
    changed since the last time."""
    admin = access.password(settings, credentials.KAFKA_ADMIN)
    orders = [
        "config bootstrap.controllers="
        + ",".join(f"127.0.0.1:{b.controller_port}" for b in settings.kafka_brokers),
        "config sasl.mechanism=PLAIN",
        f"config sasl.jaas.config={_plain_login(admin)}",
        *(f"acl {a.user} {kind} {name} {operation}" for a, kind, name, operation in KAFKA_ACLS),
    ]
    done = prepare.paths(settings).kafka_data / "acls.sha256"
    digest = hashlib.sha256("\n".join(orders).encode()).hexdigest()
    if done.exists() and done.read_text() == digest:
        return
    _security(settings, "Kafka's ACLs", orders)
    done.write_text(digest)


def _plain_login(password: str) -> str:
    return (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{credentials.KAFKA_ADMIN.user}" password="{password}";'
    )


def _security(settings: StackSettings, what: str, orders: list[str]) -> None:
    """Runs stack/kafka/Security.java with `orders` on its stdin."""
    say(f"Creating {what}")
    where = prepare.paths(settings)
    command = [
        "java",
        *prepare.kafka_java_options(where.kafka_libs),
        str(prepare.KAFKA_DIR / "Security.java"),
    ]
    orders = ["config security.protocol=SASL_PLAINTEXT", *orders]
    try:
        result = subprocess.run(
            command, input="\n".join(orders), capture_output=True, text=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired:
        raise SetupError(f"creating {what} took over 120 s: is Kafka up? (make logs)") from None
    if result.returncode != 0:
        raise SetupError(f"creating {what} failed:\n{result.stdout}{result.stderr}")


def topic_partitions(settings: StackSettings) -> dict[str, int]:
    """The topics and their partitions (which bound how many processors and savers share the work)."""
    return {
        "metrics": settings.metrics_partitions,
        "events": settings.events_partitions,
        "metrics.dlq": 1,
        "rules": 1,
        "devices": 1,
    }


# Only the latest record of each rule and device is kept (runtime/compacted.py). Kafka compacts
# closed segments only: one closes every hour, rather than at 1 GB or after 7 days (its defaults),
# so that what a service reads at its start is the topic's keys, not every change since.
COMPACTED = {"cleanup.policy": "compact", "segment.ms": "3600000"}
TOPIC_CONFIGS = {"rules": COMPACTED, "devices": COMPACTED}


async def topics(settings: StackSettings) -> None:
    """Creates the topics with explicit partition counts; warns when an existing one differs."""
    wanted = topic_partitions(settings)
    configs = TOPIC_CONFIGS
    # Every broker has a copy (min.insync.replicas, in the brokers' configuration, is 2 of 3).
    replicas = len(settings.kafka_brokers)
    admin = AIOKafkaAdminClient(**kafka.client_options(access.kafka(settings)), request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, n, replicas, topic_configs=configs.get(name, {}))
            for name, n in wanted.items()
            if name not in existing
        ]
        if missing:
            say(
                "Creating Kafka topics: "
                + ", ".join(f"{t.name} ({t.num_partitions} partitions)" for t in missing)
            )
            with contextlib.suppress(TopicAlreadyExistsError):  # another `make run` was quicker
                await admin.create_topics(missing)
        # A topic made before its settings changed gets them (they are all its own settings).
        (altered,) = await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, configs) for name, configs in configs.items()]
        )
        for code, message, _, name in altered.resources:
            if code:
                raise SetupError(f"Kafka refused the settings of topic {name}: {message or code}")
        for description in await admin.describe_topics(list(wanted)):
            name, count = description["topic"], len(description["partitions"])
            if count != wanted[name]:
                say(f"warning: topic {name} has {count} partitions, settings say {wanted[name]} (left as is)")
    finally:
        await admin.close()
