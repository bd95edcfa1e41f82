"""First-run preparation of the stack's state: data directories, database cluster, Kafka log dir."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stack import certs, credentials, envoy_config, mosquitto, prometheus_config, tokens
from stack.settings import PUBLIC_SERVICES, ROOT, Instance, KafkaBroker, RedisNode, StackSettings
from stack.system import SetupError, fetch_console_libs, fetch_docs_libs, fetch_kafka_libs, say

KAFKA_DIR = ROOT / "stack" / "kafka"
JMX_EXPORTER = KAFKA_DIR / "jmx-exporter.yml"


@dataclass(frozen=True)
class Paths:
    """Where each part keeps its state and configuration."""

    postgres_data: Path
    redis_dir: Path
    redis_acl: Path
    kafka_libs: Path
    kafka_properties: Path
    kafka_data: Path
    envoy_yaml: Path
    prometheus_yml: Path
    prometheus_data: Path
    redis_exporter_passwords: Path


def paths(settings: StackSettings) -> Paths:
    state = settings.state_dir
    return Paths(
        postgres_data=state / "postgres" / "data",
        redis_dir=state / "redis",
        redis_acl=state / "redis" / "users.acl",
        kafka_libs=state / "kafka" / "libs",
        # The first broker's.
        kafka_properties=kafka_broker_paths(settings, settings.kafka_brokers[0])[0],
        kafka_data=kafka_broker_paths(settings, settings.kafka_brokers[0])[1],
        envoy_yaml=state / "envoy.yaml",
        prometheus_yml=state / "prometheus" / "prometheus.yml",
        prometheus_data=state / "prometheus" / "data",
        redis_exporter_passwords=state / "prometheus" / "redis-passwords.json",
    )


def kafka_broker_paths(settings: StackSettings, broker: KafkaBroker) -> tuple[Path, Path]:
    """A broker's server.properties and log directory (the single node's where they always were)."""
    base = settings.state_dir / "kafka"
    if settings.cluster:
        base = base / f"broker-{broker.node_id}"
    return base / "server.properties", base / "data"


def redis_node_dir(settings: StackSettings, node: RedisNode) -> Path:
    base = paths(settings).redis_dir
    return base / f"node-{node.number}" if settings.cluster else base


def postgres_replica_data(settings: StackSettings) -> Path:
    """The streaming replica's data directory (cluster topology), made by postgres_replica()."""
    return settings.state_dir / "postgres" / "replica"


def everything(settings: StackSettings) -> None:
    """Creates, once, what the parts need; rewrites their configuration files each time."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    where = paths(settings)
    credentials.ensure(settings.secrets_dir)
    postgres_data(where.postgres_data, settings)
    postgres_access(where.postgres_data)
    redis_dir(where.redis_dir)
    for node in settings.redis_nodes:
        redis_dir(redis_node_dir(settings, node))
    redis_acl(where.redis_acl, settings)
    if settings.cluster:
        redis_replication(settings)
    libs = fetch_kafka_libs(where.kafka_libs)
    kafka_config(libs, settings)
    fetch_console_libs(envoy_config.CONSOLE.directory / "vendor")
    api_docs(envoy_config.API_DOCS.directory)
    envoy_file(where.envoy_yaml, settings)
    prometheus_files(where, settings)
    for broker in settings.mqtt_brokers:
        mosquitto.prepare(settings, broker, run_as("mosquitto"))
    (settings.state_dir / "bridge").mkdir(exist_ok=True)


def api_docs(site: Path) -> None:
    """The HTTP API's page: Swagger UI from npm, and the OpenAPI document of `make proto`."""
    fetch_docs_libs(site / "vendor")
    document = ROOT / "gen" / "openapi.yaml"
    if not document.exists():
        raise SetupError(f"{document} missing: run `make proto` (make run does it for you)")
    shutil.copy(document, site / "openapi.yaml")


def run_as(user: str) -> str | None:
    """The account a server runs as: its own when we are root (PostgreSQL refuses root), else ours."""
    return user if os.geteuid() == 0 else None


def own(path: Path, user: str | None) -> None:
    if user is not None:
        shutil.chown(path, user, user)


def postgres_data(data: Path, settings: StackSettings) -> None:
    """Creates the database cluster once; its data survives stop and start."""
    base = data.parent
    sockets = base / "run"
    user = run_as("postgres")
    for d in (base, sockets):
        d.mkdir(parents=True, exist_ok=True)
        own(d, user)
    if not (data / "PG_VERSION").exists():
        say("Creating the PostgreSQL cluster")
        # postgres_access() replaces the access rules before the first start.
        _postgres_tool(settings, data, "initdb", "-D", str(data), "-U", "postgres", "--auth-local=peer",
                       "--auth-host=reject", "--encoding=UTF8", "--locale=C.UTF-8")  # fmt: skip


def _postgres_tool(settings: StackSettings, data: Path, tool: str, *args: str) -> None:
    """Runs one of PostgreSQL's tools that makes the data directory `data`, as the server's account;
    removes what it left if it fails."""
    command = [str(settings.postgres_bin / tool), *args]
    user = run_as("postgres")
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        raise SetupError(f"{tool} failed:\n{result.stdout}{result.stderr}")


# Who may connect to PostgreSQL, and how: the superuser only through the unix socket and only from
# the account running the stack (peer, mapped by pg_ident.conf), every role over TCP with its
# password (SCRAM). No `trust`: a stack made before this had it, and its next start replaces it.
PG_HBA = """\
# Written by `make run` at each start (stack/prepare.py): edits here are lost.
# TYPE  DATABASE  USER      ADDRESS        METHOD
local   all       postgres                 peer map=stack
local   replication postgres               peer map=stack
host    all       all       127.0.0.1/32   scram-sha-256
"""


def postgres_access(data: Path) -> None:
    """Writes pg_hba.conf and pg_ident.conf (bootstrap.database makes a running server reload them)."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    files = {
        "pg_hba.conf": PG_HBA,
        # The stack's own account, and the server's (a streaming replica's walreceiver logs in as it).
        "pg_ident.conf": (
            f"# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\nstack  {me}  postgres\nstack  postgres  postgres\n"
        ),
    }
    for name, text in files.items():
        private_file(data / name, text, run_as("postgres"))


def redis_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    own(path, run_as("redis"))


# The processor's user may run its counters' scripts, read and remove its pending events and keep the
# index of clears by hand, on its keys only (processor/stream/counters.py); wait for replicas (WAIT); and
# read a Redis Cluster's slot map and command table, as redis-py's cluster client does when it
# connects (CLUSTER SLOTS, COMMAND); `admin` is the operators', the tools' and the tests'. `default` is off:
# no connection is it, and nobody can log in as it. It keeps all permissions because Redis 7.0 replays
# the append-only file's transactions (how a script's writes are logged) as `default`, checking its
# ACL: with none, a restarted Redis drops every script's writes (seen here; NOPERM in its log).
REDIS_DEFAULT_USER = "user default off ~* &* +@all"
# The exporter's (Prometheus): the server's statistics and settings, no key.
REDIS_MONITOR_RULES = (
    "resetchannels -@all +ping +info +config|get +client|list +client|setname +slowlog +latency "
    "+dbsize +select +cluster|info +memory|stats"
)
REDIS_PROCESSOR_RULES = (
    "resetchannels ~warnings:{* ~last-reading:{* ~warning-since:{* ~alarms:{* ~processor:pending:* "
    "~processor:cleared-by-hand ~silence:{* -@all +ping +evalsha +script|load +hget +hset +hdel +hincrby "
    "+hexists +hkeys +rpush +rpop +lrange +lrem +llen +sadd +srem +smembers +zadd +zrem +zscore +zrange "
    "+zrangebyscore +wait +cluster|slots +command"
)


def redis_acl(path: Path, settings: StackSettings) -> None:
    """Writes Redis's ACL file: its users with the SHA-256 of their passwords (not the passwords)."""

    def digest(account: credentials.Account) -> str:
        return hashlib.sha256(credentials.password(settings.secrets_dir, account).encode()).hexdigest()

    lines = redis_users(credentials.REDIS_ACCOUNTS, digest)
    private_file(path, "".join(f"{line}\n" for line in lines), run_as("redis"))


# What each Redis account may do.
REDIS_RULES = {
    credentials.REDIS_ADMIN: "~* &* +@all",
    credentials.REDIS_PROCESSOR: REDIS_PROCESSOR_RULES,
    credentials.REDIS_MONITOR: REDIS_MONITOR_RULES,
}


def redis_users(
    accounts: Sequence[credentials.Account], digest: Callable[[credentials.Account], str]
) -> list[str]:
    """The ACL lines of `default` (off) and of `accounts`, each with its password's SHA-256 as
    `digest` gives it."""
    return [REDIS_DEFAULT_USER, *(f"user {a.user} on #{digest(a)} {REDIS_RULES[a]}" for a in accounts)]


def redis_replication_conf(settings: StackSettings) -> Path:
    return paths(settings).redis_dir / "replication.conf"


def redis_replication(settings: StackSettings) -> None:
    """A Redis Cluster's replicas log in to their masters as admin (`default` is off): its password
    in a configuration file the nodes read first, not in their command lines."""
    admin = credentials.REDIS_ADMIN
    password = credentials.password(settings.secrets_dir, admin)
    text = f"masteruser {admin.user}\nmasterauth {password}\n"
    private_file(redis_replication_conf(settings), text, run_as("redis"))


def private_file(path: Path, text: str, user: str | None = None) -> None:
    """Writes `text` to a file only its owner (`user`, when we are root) may read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)
    own(path, user)


# Appended (the later of two equal keys wins) while the log directory lacks the SCRAM users of the
# secrets folder: made by a stack before SASL, or the folder was replaced. Admin may then also log in
# with PLAIN, so that `make run` can add them (bootstrap.kafka_users), and restarts Kafka without it.
KAFKA_ENROLMENT = """
listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \
required username="admin" password="{admin_password}" user_admin="{admin_password}";
sasl.mechanism.inter.broker.protocol=PLAIN
"""


def kafka_cluster_id() -> str:
    """A random KRaft cluster id. Like Kafka's Uuid.randomUuid, never one that starts with '-',
    which the storage tool would read as an option (1 id in 64 did)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_replication(settings: StackSettings) -> tuple[int, int]:
    """The replicas of every partition and how many must be in sync: replicated, a record is
    acknowledged once 2 of its 3 replicas have it (producers ask acks=all)."""
    return (3, 2) if len(settings.kafka_brokers) >= 3 else (1, 1)


def kafka_config(libs: Path, settings: StackSettings) -> None:
    """Writes each broker's server.properties and formats its KRaft log directory once."""
    admin_password = credentials.password(settings.secrets_dir, credentials.KAFKA_ADMIN)
    template = (KAFKA_DIR / "server.properties.in").read_text()
    if kafka_users_missing(settings):
        template += KAFKA_ENROLMENT
    brokers = settings.kafka_brokers
    voters = ",".join(f"{b.node_id}@127.0.0.1:{b.controller_port}" for b in brokers)
    replicas, in_sync = kafka_replication(settings)
    cluster_id = None
    for broker in brokers:
        properties, data = kafka_broker_paths(settings, broker)
        properties.parent.mkdir(parents=True, exist_ok=True)
        private_file(
            properties,
            template.format(
                node_id=broker.node_id, voters=voters, port=broker.port,
                proxied_port=broker.proxied_port, proxy_port=broker.proxy_port,
                controller_port=broker.controller_port, data_dir=data, admin_password=admin_password,
                replication_factor=replicas, min_insync_replicas=in_sync,
            ),
        )  # fmt: skip
        if (data / "meta.properties").exists():
            continue
        # Every broker of a cluster is formatted with the same id (one formatted before, if any).
        cluster_id = cluster_id or _formatted_cluster_id(settings) or kafka_cluster_id()
        say(f"Formatting Kafka's log directory (KRaft, node {broker.node_id})")
        command = ["java", *kafka_java_options(libs), "kafka.tools.StorageTool", "format",
                   "--cluster-id", cluster_id, "--config", str(properties)]  # fmt: skip
        # The SCRAM users are made with the cluster, at once. (Their passwords show in `ps` for the
        # second the storage tool runs, before the broker, the only thing they open, has started.)
        for account in credentials.KAFKA_ACCOUNTS:
            secret = credentials.password(settings.secrets_dir, account)
            command += ["--add-scram", f"SCRAM-SHA-512=[name={account.user},password={secret}]"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SetupError(f"formatting Kafka's log directory failed:\n{result.stdout}{result.stderr}")
    if cluster_id is not None:
        kafka_users_made(settings)


def _formatted_cluster_id(settings: StackSettings) -> str | None:
    for broker in settings.kafka_brokers:
        meta = kafka_broker_paths(settings, broker)[1] / "meta.properties"
        if meta.exists():
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.removeprefix("cluster.id=")
    return None


def _kafka_users_digest(settings: StackSettings) -> str:
    users = [(a.user, credentials.password(settings.secrets_dir, a)) for a in credentials.KAFKA_ACCOUNTS]
    return hashlib.sha256(repr(users).encode()).hexdigest()


def kafka_users_missing(settings: StackSettings) -> bool:
    """Kafka's log directory exists but has not (all) the SCRAM users of the secrets folder."""
    data = paths(settings).kafka_data
    made = data / "scram-users.sha256"
    if not (data / "meta.properties").exists():
        return False
    return not made.exists() or made.read_text() != _kafka_users_digest(settings)


def kafka_users_made(settings: StackSettings) -> None:
    (paths(settings).kafka_data / "scram-users.sha256").write_text(_kafka_users_digest(settings))


def jmx_agent(libs: Path) -> Path:
    """The JMX exporter's agent jar among the broker's (stack/kafka/pom.xml); where it will be
    before the first fetch."""
    found = sorted(libs.glob("jmx_prometheus_javaagent-*.jar"))
    return found[-1] if found else libs / "jmx_prometheus_javaagent.jar"


def kafka_java_options(libs: Path) -> list[str]:
    return [f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}", "-cp", f"{libs}/*"]


def envoy_file(path: Path, settings: StackSettings) -> None:
    """Envoy's configuration, with the TLS files and the token keys it reads (made if missing)."""
    local = "127.0.0.1"
    tls = certs.ensure(settings)
    path.write_text(
        envoy_config.render(
            tls=(local, settings.envoy_tls_port),
            plaintext=(local, settings.envoy_port) if settings.envoy_plaintext else None,
            admin=(local, settings.envoy_admin_port),
            upstreams={
                **{
                    name: [(local, i.grpc_port) for i in _instances_and_standby(settings, name)]
                    for name in PUBLIC_SERVICES
                },
                "prometheus": [(local, settings.prometheus_port)],
            },
            descriptor=ROOT / "gen" / "metrics.binpb",
            certificate=tls.certificate,
            private_key=tls.private_key,
            jwt_authn=tokens.ensure_jwt_authn(settings),
            client_ca=certs.client_ca(settings),
            sites=[envoy_config.CONSOLE, envoy_config.API_DOCS],
        )
    )


def _instances_and_standby(settings: StackSettings, service: str) -> list[Instance]:
    standby = settings.standby(service)
    return settings.instances(service) + ([standby] if standby else [])


def prometheus_files(where: Paths, settings: StackSettings) -> None:
    """Prometheus's configuration, and the Redis exporter's password (a JSON map by address: the
    only way it reads one from a file)."""
    where.prometheus_data.mkdir(parents=True, exist_ok=True)
    where.prometheus_yml.write_text(prometheus_config.render(settings))
    password = credentials.password(settings.secrets_dir, credentials.REDIS_MONITOR)
    addresses = [f"redis://127.0.0.1:{node.port}" for node in settings.redis_nodes]
    private_file(where.redis_exporter_passwords, json.dumps(dict.fromkeys(addresses, password)))


def postgres_replica(settings: StackSettings) -> None:
    """Makes the streaming replica's data directory once, a base backup of the running primary that
    follows it (-R: standby.signal and primary_conninfo; WAL streamed through the unix socket as the
    server's account, which pg_hba.conf and pg_ident.conf allow)."""
    data = postgres_replica_data(settings)
    if (data / "PG_VERSION").exists():
        return
    say("Making the PostgreSQL replica (a base backup of the primary)")
    shutil.rmtree(data, ignore_errors=True)  # what a failed backup left
    _postgres_tool(settings, data, "pg_basebackup", "-h", str(settings.postgres_socket_dir),
                   "-p", str(settings.postgres_port), "-U", "postgres", "-D", str(data),
                   "-R", "-X", "stream", "-c", "fast")  # fmt: skip
