"""docker-compose.yml and deploy/compose/cluster.env, generated from the description the local stack
runs from: the ports and topologies of stack/settings.py, each service's settings (stack/service_env.py),
the accounts of stack/credentials.py, the topics and ACLs of stack/bootstrap.py, the broker settings
of stack/kafka/server.properties.in and the servers' options of stack/parts.py and stack/prepare.py.

One file, two deployments: the single node (no variable set, no profile) and the cluster topology.
A value that differs between the two is a METRICS_COMPOSE_* variable whose default is the single
node's; cluster.env sets the cluster's and enables the profile of the services only it has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import PurePosixPath

from assessor.settings import AssessorSettings
from bridge.settings import BridgeSettings
from notifier.settings import NotifierSettings
from processor.settings import ProcessorSettings
from receiver.settings import ReceiverSettings
from registry.settings import RegistrySettings
from saver.settings import SaverSettings
from stack import bootstrap, compose_secrets, credentials, mosquitto, prepare
from stack.commented_yaml import Anchor, Note, comment, dump, unwrapped, variant
from stack.compose_secrets import REGISTRY_MOUNTED
from stack.credentials import Account
from stack.parts import POSTGRES_OPTIONS, SERVER_STOP_WAIT_S, STOP_WAIT_S
from stack.redis_cluster import REPLICAS_PER_MASTER
from stack.service_env import Deployment, service_env
from stack.settings import (
    CLUSTER_INSTANCES,
    KAFKA_BROKERS,
    PUBLIC_SERVICES,
    REDIS_NODES,
    ROOT,
    SERVICES,
    KafkaBroker,
    MqttBroker,
    StackSettings,
)

SINGLE, CLUSTER = StackSettings(), StackSettings(topology="cluster")
PROFILE = CLUSTER.topology
PROJECT = "metrics-cluster"
SECRETS = PurePosixPath("/run/secrets")
SECRETS_FOLDER = f"./{compose_secrets.FOLDER.relative_to(ROOT)}"
# The images' own ports on the Compose network, and Kafka's listeners in each broker's container:
# the brokers' and the services' among themselves, the controllers', the host's (published).
POSTGRES_PORT, REDIS_PORT = 5432, 6379
KAFKA_INTERNAL, KAFKA_CONTROLLER = 9092, 9093
KAFKA_DATA = "/var/lib/kafka/data"
POSTGRES_IMAGE = f"postgres:{SINGLE.postgres_bin.parent.name}"
REDIS_IMAGE = "redis:7"
KAFKA_IMAGE = "apache/kafka:4.1.1"
# The id the brokers' storage is formatted with on their first start (a volume keeps it).
KAFKA_CLUSTER_ID = "XD0TtayVTS2h9p4G2QDwbw"
SETTINGS_CLASSES: Mapping[str, type] = {
    "receiver": ReceiverSettings,
    "processor": ProcessorSettings,
    "saver": SaverSettings,
    "assessor": AssessorSettings,
    "notifier": NotifierSettings,
    "bridge": BridgeSettings,
    "registry": RegistrySettings,
}

# --- The topology variables and deploy/compose/cluster.env ---

# Every METRICS_COMPOSE_* variable, in cluster.env's order, with its comment there (none: the
# previous one's says it).
VARIABLES = {
    "KAFKA_VOTERS": "Kafka: {brokers} brokers, each a controller of one quorum; the services start from "
    "any of them.",
    "KAFKA_SERVERS": "",
    "KAFKA_REPLICAS": "Every partition (the internal topics' too) on all of them; a write (acks=all) needs "
    "{in_sync} in sync.",
    "KAFKA_MIN_ISR": "",
    "REDIS_CLUSTER": "Redis Cluster (the nodes' cluster-enabled, the processor's cluster client); the "
    "processor waits for {replicas} replica of each master it wrote to before it commits offsets.",
    "REDIS_REPLICAS": "",
    "POSTGRES_REPLICATION": "PostgreSQL: the primary lets the replica stream; the assessors read from it.",
    "ASSESSOR_REPLICA_DSN": "",
    "MQTT_BROKERS": "MQTT: {mqtt_brokers} brokers (devices are given both; Mosquitto has no clustering), "
    "each bridge subscribed to both; {bridges} bridges share the subscription, each its share of arrival "
    "microseconds.",
    "BRIDGES": "",
    "REGISTRY_MQTT_BROKERS": "The registry keeps the devices' MQTT accounts at every broker (their TLS "
    "listeners).",
}
# The services' settings that differ between the topologies, and the variable each reads.
SETTING_VARIABLES = {
    "METRICS_KAFKA_BOOTSTRAP_SERVERS": "KAFKA_SERVERS",
    "METRICS_PROCESSOR_REDIS_CLUSTER": "REDIS_CLUSTER",
    "METRICS_PROCESSOR_REDIS_REPLICAS": "REDIS_REPLICAS",
    "METRICS_ASSESSOR_REPLICA_DSN": "ASSESSOR_REPLICA_DSN",
    "METRICS_BRIDGE_BROKERS": "MQTT_BROKERS",
    "METRICS_BRIDGE_ARRIVAL_SLOTS": "BRIDGES",
    "METRICS_REGISTRY_MQTT_BROKERS": "REGISTRY_MQTT_BROKERS",
}


@dataclass
class Variables:
    """The variables the file reads, each with its single node's value (the default) and the cluster's."""

    values: dict[str, tuple[str, str]] = field(default_factory=dict)

    def ref(self, name: str, single: object, cluster: object) -> str:
        if name not in VARIABLES:
            raise KeyError(f"METRICS_COMPOSE_{name}: add it to VARIABLES, with why the cluster sets it")
        pair = (str(single), str(cluster))
        if self.values.setdefault(name, pair) != pair:
            raise ValueError(f"METRICS_COMPOSE_{name}: {pair} here, {self.values[name]} elsewhere")
        return f"${{METRICS_COMPOSE_{name}:-{pair[0]}}}"


def render_cluster_env() -> str:
    """deploy/compose/cluster.env: the cluster's values of every variable, its profile and project."""
    variables = Variables()
    _document(variables)
    replication = prepare.kafka_replication(CLUSTER)
    facts = {
        "brokers": len(CLUSTER.kafka_brokers),
        "in_sync": replication[1],
        "replicas": REPLICAS_PER_MASTER,
        "bridges": len(CLUSTER.instances("bridge")),
        "mqtt_brokers": len(CLUSTER.mqtt_brokers),
    }
    lines = [
        *comment(GENERATED),
        *comment("The cluster topology of docker-compose.yml on one Docker host:"),
        *comment("  make compose-secrets && docker compose --env-file deploy/compose/cluster.env up --build"),
        *comment(
            "Compose reads the project's name and profiles from here too: a project of its own (its own "
            f"volumes and network, not the single-node deployment's) with the profile `{PROFILE}`."
        ),
        f"COMPOSE_PROJECT_NAME={PROJECT}",
        f"COMPOSE_PROFILES={PROFILE}",
    ]
    for name, why in VARIABLES.items():
        lines += comment(why.format(**facts))
        lines.append(f"METRICS_COMPOSE_{name}={variables.values[name][1]}")
    return "\n".join(lines) + "\n"


GENERATED = (
    "Generated by `make generate` from stack/ (stack/compose.py): edit the generator, not this file; "
    "`make check-generated` fails while the two differ."
)


def render() -> str:
    """docker-compose.yml."""
    return dump(_document(Variables()), _header(), spaced=("services",))


def _header() -> str:
    masters = REDIS_NODES // (REPLICAS_PER_MASTER + 1)
    replicas, in_sync = prepare.kafka_replication(CLUSTER)
    paragraphs = [
        GENERATED,
        "",
        "The local stack of `make run` as containers: the same parts, topics, roles and settings, from "
        "the official images plus one image for the services (Dockerfile).",
        "  make compose-secrets && docker compose up --build",
        "Every port is published on 127.0.0.1 at the local stack's default (stack/settings.py), moved by "
        "the same variables (METRICS_ENVOY_TLS_PORT, ...), so tests/targets/compose.toml reaches this "
        "deployment; clients outside use Envoy's TLS port only.",
        "tests/unit/test_compose.py checks this file against the Compose Specification.",
        "No top-level `name:`, which Debian's docker-compose 1.29 refuses; the rest passes its `config`.",
        f"Credentials: Docker secrets, one file per account in {SECRETS_FOLDER.removeprefix('./')} (not in "
        "git), made once by `make compose-secrets` (stack/credentials.py: the same file names as the local "
        "stack's). The services read theirs through ..._PASSWORD_FILE settings; no password is written here "
        "or in an environment variable.",
        "",
        "The cluster topology, on one Docker host (docs/operations/scaling.md):",
        "  make compose-secrets && docker compose --env-file deploy/compose/cluster.env up --build",
        f"{KAFKA_BROKERS} Kafka brokers (one KRaft quorum, topics with {replicas} replicas, {in_sync} in "
        f"sync), a Redis Cluster of {masters} masters with {REPLICAS_PER_MASTER} replica each, a PostgreSQL "
        "streaming replica for the assessors, and more instances of the services behind Envoy (but the "
        "notifier and the registry): the topology of `make run-cluster` (stack/settings.py).",
        "Why a profile plus variables rather than a profile alone: a profile can only add services, but the "
        "cluster also changes some that every deployment has (the Kafka node joins a quorum, the Redis node "
        "becomes a cluster node, the processor and the assessor get settings). Those read the "
        "METRICS_COMPOSE_* variables, whose defaults are the single node; deploy/compose/cluster.env sets "
        f"them all at once, names the profile `{PROFILE}` (the other nodes, the replica, the second "
        "instances and their init jobs) and gives the project its own name, so its volumes are not the "
        "single node's. Without it, `docker compose up` is the single-node deployment, unchanged.",
    ]
    return "\n".join(paragraphs)


# --- The document ---


def _document(variables: Variables) -> dict[str, object]:
    every = {
        **_postgres(variables),
        **_redis(variables),
        **_kafka(variables),
        **_mosquittos(),
        **_services(variables),
        "envoy": _envoy(),
    }
    single = {name: s for name, s in every.items() if "profiles" not in _own(s)}
    cluster = {name: s for name, s in every.items() if name not in single}
    (first, *_) = cluster
    cluster[first] = Note(
        f"--- The {PROFILE} profile (deploy/compose/cluster.env): the other nodes, the replica, the "
        "second instances and their init jobs. Nothing here starts without the profile.\n",
        cluster[first],
    )
    volumes = _volumes(single) | dict.fromkeys(_volumes(cluster))
    (first_volume, *_) = _volumes(cluster)
    volumes[first_volume] = Note(f"The {PROFILE} profile's.", None)
    return {
        "x-service": Anchor("service", SERVICE),
        "services": single | cluster,
        "volumes": volumes,
        "secrets": Note(
            "One file per account, made by `make compose-secrets` (see the top).",
            {a.file_name: _secret(a) for a in credentials.ACCOUNTS},
        ),
    }


def _secret(account: Account) -> object:
    why = {
        credentials.POSTGRES_REPLICATOR: "The streaming replica's (the cluster profile).",
        credentials.POSTGRES_MONITOR: "The exporters' (Prometheus's), which the local stack runs.",
        credentials.REDIS_MONITOR: "The exporters' too.",
    }
    entry = {"file": f"{SECRETS_FOLDER}/{account.file_name}"}
    return Note(why[account], entry) if account in why else entry


def _volumes(services: Mapping[str, object]) -> dict[str, object]:
    """The named volumes the services mount (one server's data each)."""
    lists = (unwrapped(_own(s).get("volumes", [])) for s in services.values())
    mounts = [str(unwrapped(v)) for volumes in lists if isinstance(volumes, list) for v in volumes]
    return dict.fromkeys(m.split(":", 1)[0] for m in mounts if not m.startswith((".", "/")))


def _own(service: object) -> Mapping[str, object]:
    """A service's own entries (not those it merges), its anchor and comment taken off."""
    value = unwrapped(service)
    assert isinstance(value, Mapping)
    return value


def _on_host(variable: str, default: int) -> str:
    """An address on the host's loopback, its port moved by the variable the local stack reads."""
    return f"127.0.0.1:${{{variable}:-{default}}}"


def _port_of(field_name: str, container: int | None = None) -> str:
    default = getattr(SINGLE, field_name)
    return f"{_on_host(f'METRICS_{field_name.upper()}', default)}:{container or default}"


def _secrets(*accounts: Account) -> list[str]:
    return [a.file_name for a in accounts]


def _numbered(kind: str, number: int) -> str:
    """A container's name: the first of a kind keeps the single node's (kafka, kafka-2, ...)."""
    return kind if number == 1 else f"{kind}-{number}"


def _healthy(*names: str) -> dict[str, object]:
    return {name: {"condition": "service_healthy"} for name in names}


def _script(*lines: str) -> list[str]:
    """A bash script (lines of Compose's text: $$ is bash's $) as a container's command."""
    return ["bash", "-ec", "".join(f"{line}\n" for line in lines)]


def _cluster_profile(definition: dict[str, object], number: int) -> dict[str, object]:
    """The cluster profile's copies of a container, but for the first."""
    return definition if number == 1 else {"profiles": [PROFILE], **definition}


# --- PostgreSQL ---

# The roles deploy/compose/postgres-init.sh makes, as stack/bootstrap.py does (the exporters' is the
# local stack's only).
POSTGRES_ROLES = (credentials.POSTGRES_OWNER, credentials.POSTGRES_WRITER, credentials.POSTGRES_READER,
                  credentials.POSTGRES_PROCESSOR, credentials.POSTGRES_NOTIFIER,
                  credentials.POSTGRES_REGISTRY)  # fmt: skip
# Over TCP: the image's first-start server (running the init script) listens on no TCP address.
POSTGRES_READY = ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", credentials.POSTGRES_SUPERUSER.user,
                  "-d", "metrics"]  # fmt: skip
REPLICATOR = credentials.POSTGRES_REPLICATOR
REPLICA, SLOT = "postgres-replica", "replica_1"


def _postgres(variables: Variables) -> dict[str, object]:
    superuser = credentials.POSTGRES_SUPERUSER
    primary = {
        "image": POSTGRES_IMAGE,
        "restart": "unless-stopped",
        "environment": {
            "POSTGRES_PASSWORD_FILE": str(credentials.password_file(SECRETS, superuser)),
            "POSTGRES_INITDB_ARGS": Note(
                "Sensor ids sort by code point, as in the local stack (ListSensors pages by id ranges). "
                "Every connection, the unix socket's too, logs in with a SCRAM password: no `trust`.",
                "--locale=C.UTF-8 --encoding=UTF8 --auth-local=scram-sha-256 --auth-host=scram-sha-256",
            ),
            "METRICS_REPLICATION": Note(
                "on (the cluster profile): the init script lets the replica's role stream WAL (pg_hba.conf).",
                variables.ref("POSTGRES_REPLICATION", "off", "on"),
            ),
        },
        "secrets": _secrets(superuser, *POSTGRES_ROLES),
        "command": Note("As the local stack's server (stack/parts.py).",
                        ["postgres", *_options(POSTGRES_OPTIONS)]),
        "shm_size": "256mb",
        "volumes": [
            "postgres-data:/var/lib/postgresql/data",
            Note(
                "The roles and the database metrics, as stack/bootstrap.py makes them.",
                "./deploy/compose/postgres-init.sh:/docker-entrypoint-initdb.d/10-metrics.sh:ro",
            ),
        ],
        "ports": [_port_of("postgres_port", POSTGRES_PORT)],
        "healthcheck": {
            "test": Note("Over TCP: the image's first-start server (running the init script) listens on "
                         "no TCP address.", POSTGRES_READY),
            "interval": "5s", "timeout": "5s", "retries": 12, "start_period": "30s",
        },
        "stop_grace_period": Note(
            'The image stops PostgreSQL with SIGINT ("fast" shutdown); give it time to checkpoint.',
            f"{SERVER_STOP_WAIT_S}s",
        ),
    }  # fmt: skip
    return {
        "postgres": primary,
        "postgres-replica-init": _postgres_replica_init(),
        REPLICA: _postgres_replica(),
    }


def _options(options: Iterable[str]) -> list[str]:
    return [arg for option in options for arg in ("-c", option)]


def _postgres_replica_init() -> object:
    superuser = credentials.POSTGRES_SUPERUSER
    script = _script(
        "umask 077",
        f"printf 'postgres:{POSTGRES_PORT}:*:{superuser.user}:%s\\n' \"$$(cat {_file(superuser)})\""
        " > /tmp/pgpass",
        "export PGPASSFILE=/tmp/pgpass",
        f"psql -v ON_ERROR_STOP=1 -h postgres -U {superuser.user} -d postgres <<'SQL'",
        f"\\set replicator `cat {_file(REPLICATOR)}`",
        f"SELECT 'CREATE ROLE {REPLICATOR.user} REPLICATION LOGIN'",
        f" WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{REPLICATOR.user}') \\gexec",
        f"ALTER ROLE {REPLICATOR.user} PASSWORD :'replicator';",
        f"SELECT pg_create_physical_replication_slot('{SLOT}')",
        f" WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = '{SLOT}');",
        "ALTER SYSTEM SET max_slot_wal_keep_size = '8GB';",
        "SELECT pg_reload_conf();",
        "SQL",
    )
    return Note(
        "Once: the replica's login (a role that may only replicate, its password from the secret at every "
        "`up`) and its replication slot on the primary, which keeps the WAL the replica has yet to read, up "
        "to 8 GB (beyond that the replica must be made again, rather than the primary's disk fill up).",
        {
            "image": POSTGRES_IMAGE,
            "profiles": [PROFILE],
            "restart": "no",
            "depends_on": _healthy("postgres"),
            "command": script,
            "secrets": _secrets(superuser, REPLICATOR),
        },
    )


def _postgres_replica() -> object:
    standby = ["hot_standby=on", "hot_standby_feedback=on", f"primary_slot_name={SLOT}"]
    conninfo = (f"primary_conninfo=host=postgres port={POSTGRES_PORT} user={REPLICATOR.user} "
                f"passfile=$$pgpass application_name={REPLICA}")  # fmt: skip
    script = _script(
        "umask 077",
        "pgpass=/var/lib/postgresql/replica.pgpass",
        f"printf 'postgres:{POSTGRES_PORT}:replication:{REPLICATOR.user}:%s\\n' "
        f'"$$(cat {_file(REPLICATOR)})" > $$pgpass',
        "chown postgres:postgres $$pgpass",
        "# standby.signal comes last: without it, what is there is an unfinished backup.",
        'if [ ! -e "$$PGDATA/standby.signal" ]; then',
        '  install -d -o postgres -g postgres -m 700 "$$PGDATA"',
        '  find "$$PGDATA" -mindepth 1 -delete',
        "  gosu postgres env PGPASSFILE=$$pgpass pg_basebackup -h postgres "
        f'-U {REPLICATOR.user} -D "$$PGDATA" \\',
        f"    -X stream -S {SLOT} --checkpoint=fast",
        '  gosu postgres touch "$$PGDATA/standby.signal"',
        "fi",
        "# The primary's settings (a standby needs at least its max_connections), then the standby's.",
        f"exec docker-entrypoint.sh postgres {' '.join(_options(POSTGRES_OPTIONS))} \\",
        f"  {' '.join(_options(standby))} \\",
        f'  -c "{conninfo}"',
    )
    return Note(
        "A hot standby of postgres: a base backup on its first start (again if one was cut short), then "
        "the primary's WAL as it is written, through the slot. The assessors read here.",
        {
            "image": POSTGRES_IMAGE,
            "profiles": [PROFILE],
            "restart": "unless-stopped",
            "hostname": REPLICA,
            "depends_on": {"postgres-replica-init": {"condition": "service_completed_successfully"}},
            "command": script,
            "secrets": _secrets(REPLICATOR),
            "shm_size": "256mb",
            "volumes": [f"{REPLICA}-data:/var/lib/postgresql/data"],
            "healthcheck": {"test": POSTGRES_READY, "interval": "5s", "timeout": "5s", "retries": 60,
                            "start_period": "60s"},
            "stop_grace_period": f"{SERVER_STOP_WAIT_S}s",
        },
    )  # fmt: skip


def _file(account: Account) -> str:
    return str(credentials.password_file(SECRETS, account))


# --- Redis ---

# The accounts of Redis's ACL here (the exporters' is the local stack's only).
REDIS_USERS = (credentials.REDIS_ADMIN, credentials.REDIS_PROCESSOR)


def _redis(variables: Variables) -> dict[str, object]:
    names = [_numbered("redis", node.number) for node in CLUSTER.redis_nodes]
    definitions = {name: _redis_node(name, number, variables) for number, name in enumerate(names, 1)}
    first = definitions.pop("redis")
    others = {name: variant("redis", first, definition) for name, definition in definitions.items()}
    (second, *rest) = others
    why = (
        f"Redis Cluster: redis and these {len(others)}, the ACL of every node the same; redis-cluster-init "
        f"makes {len(names) // (REPLICAS_PER_MASTER + 1)} masters with {REPLICAS_PER_MASTER} replica each. "
        "Only redis is published: a cluster client on the host would be sent on to the other nodes by names "
        "only the Compose network resolves."
    )
    return {
        "redis": Anchor("redis", first),
        second: Note(why, others[second]),
        **{name: others[name] for name in rest},
        "redis-cluster-init": _redis_cluster_init(),
    }


def _redis_node(name: str, number: int, variables: Variables) -> dict[str, object]:
    admin = credentials.REDIS_ADMIN
    users = prepare.redis_users(REDIS_USERS, lambda a: f"$$(digest {a.user})")
    # A node of a Redis Cluster where the processors' client is a cluster client.
    on = _setting("processor", "METRICS_PROCESSOR_REDIS_CLUSTER", CLUSTER)
    cluster = variables.ref(
        "REDIS_CLUSTER", _setting("processor", "METRICS_PROCESSOR_REDIS_CLUSTER", SINGLE), on
    )
    script = _script(
        f"digest() {{ printf %s \"$$(cat {SECRETS}/redis-$$1)\" | sha256sum | cut -d' ' -f1; }}",
        "umask 077",
        "{",
        *(f'  echo "{line}"' for line in users),
        "} > /data/users.acl",
        'options=(--aclfile /data/users.acl --appendonly yes --appendfsync everysec --save "")',
        "# The cluster profile: a node of a Redis Cluster that clients know by its name, whose",
        "# replica logs in to its master as admin (the password in a file, not on the command line).",
        f'if [ "{cluster}" = {on} ]; then',
        f"  printf 'masteruser {admin.user}\\nmasterauth %s\\n' \"$$(cat {_file(admin)})\" "
        "> /data/replication.conf",
        '  options=(/data/replication.conf "$${options[@]}" --cluster-enabled yes',
        '    --cluster-announce-hostname "$$(hostname)" --cluster-preferred-endpoint-type hostname)',
        "fi",
        "# The image's entrypoint makes /data the redis user's and runs the server as that user.",
        'exec docker-entrypoint.sh redis-server "$${options[@]}"',
    )
    ping = f'[ "$$(REDISCLI_AUTH="$$(cat {_file(admin)})" redis-cli --user {admin.user} ping)" = PONG ]'
    return _cluster_profile({
        "image": REDIS_IMAGE,
        "restart": "unless-stopped",
        "hostname": _note("The name a Redis Cluster node gives clients (the cluster profile): its address "
                          "may change." if number == 1 else "", name),
        "command": Note(
            "The ACL of the local stack (stack/prepare.py): default off, admin, and the processor limited to "
            "its counters' commands and keys; the file holds the passwords' SHA-256, not the passwords.",
            script,
        ),
        "secrets": _secrets(*REDIS_USERS),
        "volumes": [f"{name}-data:/data"],
        "ports": [_port_of("redis_port", REDIS_PORT)] if number == 1 else [],
        "healthcheck": {"test": ["CMD-SHELL", ping], "interval": "5s", "timeout": "5s", "retries": 12},
    }, number)  # fmt: skip


def _redis_cluster_init() -> object:
    admin = credentials.REDIS_ADMIN
    nodes = [_numbered("redis", node.number) for node in CLUSTER.redis_nodes]
    script = _script(
        f'export REDISCLI_AUTH="$$(cat {_file(admin)})"',
        f"if redis-cli --user {admin.user} -h redis cluster info | grep -q '^cluster_state:ok'; then",
        '  echo "the cluster is formed"; exit 0',
        "fi",
        "# By address: CLUSTER MEET takes addresses, not names.",
        "addresses=()",
        f"for node in {' '.join(nodes)}; do",
        f"  addresses+=(\"$$(getent hosts $$node | awk '{{print $$1}}'):{REDIS_PORT}\")",
        "done",
        f'redis-cli --user {admin.user} --cluster create "$${{addresses[@]}}" '
        f"--cluster-replicas {REPLICAS_PER_MASTER} --cluster-yes",
    )
    return Note(
        f"Once: the cluster from the {len(nodes)} nodes (16,384 slots over "
        f"{len(nodes) // (REPLICAS_PER_MASTER + 1)} masters), unless it is formed. The processors "
        "(restarted until it is) wait for it.",
        {
            "image": REDIS_IMAGE,
            "profiles": [PROFILE],
            "restart": "no",
            "depends_on": _healthy(*nodes),
            "command": script,
            "secrets": _secrets(admin),
        },
    )


# --- Kafka ---

ADMIN = credentials.KAFKA_ADMIN
# The listeners of a broker's container: the Compose network's, the host's (published) and the
# controllers'.
LISTENERS = {"INTERNAL": KAFKA_INTERNAL, "HOST": SINGLE.kafka_port, "CONTROLLER": KAFKA_CONTROLLER}
# The broker settings taken from the local stack's (stack/kafka/server.properties.in), as the image
# reads them from the environment (KAFKA_ and the name in capitals, _ for .); the rest are about
# listeners, logins and files, which differ in a container.
BROKER_SETTINGS = (
    "process.roles", "node.id", "controller.quorum.voters", "controller.listener.names",
    "sasl.mechanism.inter.broker.protocol", "listener.name.controller.sasl.enabled.mechanisms",
    "sasl.mechanism.controller.protocol", "authorizer.class.name", "allow.everyone.if.no.acl.found",
    "super.users", "auto.create.topics.enable", "message.max.bytes", "num.partitions",
    "offsets.topic.replication.factor", "offsets.topic.num.partitions",
    "transaction.state.log.replication.factor", "transaction.state.log.min.isr",
    "share.coordinator.state.topic.replication.factor", "share.coordinator.state.topic.min.isr",
    "min.insync.replicas", "group.initial.rebalance.delay.ms", "log.retention.hours",
)  # fmt: skip
# What the storage tool needs to format a broker's log directory on its first start.
FORMAT_SETTINGS = (
    "process.roles", "node.id", "controller.quorum.voters", "controller.listener.names",
    "inter.broker.listener.name", "listeners", "listener.security.protocol.map", "log.dirs",
)  # fmt: skip
BROKER_NOTES = {
    "auto.create.topics.enable": "Topics are made by kafka-init with explicit partition counts; a typo must "
    "not create one.",
    "share.coordinator.state.topic.replication.factor": "Kafka 4's share-group state topic defaults to 3 "
    "replicas; one broker here (3 in the cluster).",
}


def _kafka_env_name(setting: str) -> str:
    return "KAFKA_" + setting.upper().replace(".", "_")


def _broker_template() -> dict[str, str]:
    """The local stack's broker settings, their placeholders unfilled."""
    lines = (prepare.KAFKA_DIR / "server.properties.in").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def _kafka(variables: Variables) -> dict[str, object]:
    definitions = {_numbered("kafka", b.node_id): _kafka_node(b, variables) for b in CLUSTER.kafka_brokers}
    first = definitions.pop("kafka")
    others = {name: variant("kafka", first, definition) for name, definition in definitions.items()}
    return {"kafka": Anchor("kafka", first), **others, "kafka-init": _kafka_init(variables)}


def _kafka_node(broker: KafkaBroker, variables: Variables) -> dict[str, object]:
    name = _numbered("kafka", broker.node_id)
    host_port = f"METRICS_KAFKA_{broker.node_id}_PORT" if broker.node_id > 1 else "METRICS_KAFKA_PORT"
    host = _on_host(host_port, broker.port)
    env = _kafka_env(broker, host, variables)
    script = _script(
        "secret() { cat /run/secrets/kafka-$$1; }",
        "umask 077",
        "cat > /tmp/kafka_server_jaas.conf <<EOF",
        "controller.KafkaServer { org.apache.kafka.common.security.plain.PlainLoginModule required",
        f'  username="{ADMIN.user}" password="$$(secret {ADMIN.user})" '
        f'user_{ADMIN.user}="$$(secret {ADMIN.user})"; }};',
        "internal.KafkaServer { org.apache.kafka.common.security.scram.ScramLoginModule required",
        f'  username="{ADMIN.user}" password="$$(secret {ADMIN.user})"; }};',
        "host.KafkaServer { org.apache.kafka.common.security.scram.ScramLoginModule required; };",
        "EOF",
        _admin_properties(f"$$(secret {ADMIN.user})"),
        'export KAFKA_OPTS="-Djava.security.auth.login.config=/tmp/kafka_server_jaas.conf"',
        f"if [ ! -e {KAFKA_DATA}/meta.properties ]; then",
        "  printf '%s\\n' \\",
        *(f"    {s}=$${_kafka_env_name(s)} \\" for s in FORMAT_SETTINGS[:-1]),
        f"    {FORMAT_SETTINGS[-1]}=$${_kafka_env_name(FORMAT_SETTINGS[-1])} > /tmp/format.properties",
        "  scram=()",
        f"  for user in {' '.join(a.user for a in credentials.KAFKA_ACCOUNTS)}; do",
        '    scram+=(--add-scram "SCRAM-SHA-512=[name=$$user,password=$$(secret $$user)]")',
        "  done",
        '  /opt/kafka/bin/kafka-storage.sh format --cluster-id "$$CLUSTER_ID" '
        '--config /tmp/format.properties "$${scram[@]}"',
        "fi",
        "exec /etc/kafka/docker/run",
    )
    number = broker.node_id
    first = number == 1
    others = [_numbered("kafka", b.node_id) for b in CLUSTER.kafka_brokers[1:]]
    return _cluster_profile({
        "image": KAFKA_IMAGE,
        "restart": "unless-stopped",
        "hostname": name,
        "command": Note(
            "The logins of stack/kafka/server.properties.in, in a JAAS file made from the secrets (the "
            "image takes its properties from the environment, where passwords must not be); the SCRAM users "
            "are made with the cluster, on the first start (the storage tool's --add-scram), as "
            "stack/prepare.py.",
            script,
        ),
        "secrets": _secrets(*credentials.KAFKA_ACCOUNTS),
        "environment": Note(
            "KRaft, as stack/kafka/server.properties.in: containers use the broker's name at "
            f"{KAFKA_INTERNAL}, the host 127.0.0.1 at the published port (the HOST listener). "
            "SASL/SCRAM-SHA-512 on both; SASL_PLAINTEXT (the records are not encrypted) on the Compose "
            "network and the host's loopback.\n"
            f"The cluster profile: this node and {', '.join(others)}, each broker and controller, the "
            "controllers one quorum; every partition replicated as "
            "METRICS_COMPOSE_KAFKA_REPLICAS and METRICS_COMPOSE_KAFKA_MIN_ISR say.",
            Anchor("kafka-env", env),
        ) if first else Anchor("kafka-env", env),
        "volumes": [f"{name}-data:{KAFKA_DATA}"],
        "ports": _note(
            "Clients on the host reach every broker: each leads some partitions." if number == 2 else "",
            [f"{host}:{SINGLE.kafka_port}"],
        ),
        "healthcheck": {
            "test": ["CMD-SHELL", f"/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server "
                     f"localhost:{KAFKA_INTERNAL} --command-config /tmp/admin.properties >/dev/null"],
            "interval": "10s", "timeout": "20s", "retries": 12, "start_period": "30s",
        },
        "stop_grace_period": f"{SERVER_STOP_WAIT_S}s",
    }, broker.node_id)  # fmt: skip


def _kafka_env(broker: KafkaBroker, host: str, variables: Variables) -> dict[str, object]:
    replicas, in_sync = _replication(variables)
    placeholders = {
        "node_id": str(broker.node_id),
        "voters": variables.ref("KAFKA_VOTERS", _voters(SINGLE), _voters(CLUSTER)),
        "replication_factor": replicas,
        "min_insync_replicas": in_sync,
    }
    template = _broker_template()
    local = {
        _kafka_env_name(s): _note(BROKER_NOTES.get(s), template[s].format_map(placeholders))
        for s in BROKER_SETTINGS
    }
    name = _numbered("kafka", broker.node_id)
    return {
        "CLUSTER_ID": KAFKA_CLUSTER_ID,
        **local,
        "KAFKA_LISTENERS": ",".join(f"{listener}://:{port}" for listener, port in LISTENERS.items()),
        "KAFKA_ADVERTISED_LISTENERS": f"INTERNAL://{name}:{KAFKA_INTERNAL},HOST://{host}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": ",".join(
            f"{listener}:SASL_PLAINTEXT" for listener in LISTENERS
        ),
        "KAFKA_INTER_BROKER_LISTENER_NAME": "INTERNAL",
        # The local stack's client listener's mechanisms, on the listeners but the controller's.
        "KAFKA_SASL_ENABLED_MECHANISMS": template["listener.name.sasl_plaintext.sasl.enabled.mechanisms"],
        "KAFKA_LOG_DIRS": KAFKA_DATA,
        "KAFKA_HEAP_OPTS": f"-Xms{SINGLE.kafka_heap} -Xmx{SINGLE.kafka_heap}",
    }


def _replication(variables: Variables) -> tuple[str, str]:
    """The replicas of every partition and how many in sync a write needs, as the local stack's."""
    single, cluster = prepare.kafka_replication(SINGLE), prepare.kafka_replication(CLUSTER)
    return (variables.ref("KAFKA_REPLICAS", single[0], cluster[0]),
            variables.ref("KAFKA_MIN_ISR", single[1], cluster[1]))  # fmt: skip


def _note(comment: str | None, value: object) -> object:
    """The value, with the comment if there is one."""
    return Note(comment, value) if comment else value


def _voters(settings: StackSettings) -> str:
    """The controller quorum: the single node is its own, on its loopback."""
    hosts = {
        b.node_id: _numbered("kafka", b.node_id) if settings.cluster else "localhost"
        for b in settings.kafka_brokers
    }
    return ",".join(f"{node}@{host}:{KAFKA_CONTROLLER}" for node, host in hosts.items())


def _admin_properties(password: str) -> str:
    """The script line writing the admin's client login, for Kafka's tools."""
    login = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN.user}" '
             'password="%s";')  # fmt: skip
    properties = (
        f"security.protocol=SASL_PLAINTEXT\\nsasl.mechanism=SCRAM-SHA-512\\nsasl.jaas.config={login}\\n"
    )
    return f"printf '{properties}' \"{password}\" > /tmp/admin.properties"


def _kafka_init(variables: Variables) -> object:
    servers = variables.ref("KAFKA_SERVERS", *(_deployment(s).kafka for s in (SINGLE, CLUSTER)))
    replicas, in_sync = _replication(variables)
    users = [a.user for a in credentials.KAFKA_ACCOUNTS if a != ADMIN]
    script = _script(
        "umask 077",
        _admin_properties(f"$$(cat {_file(ADMIN)})"),
        f'admin="--bootstrap-server {servers} --command-config /tmp/admin.properties"',
        "# Every replica of a partition on a broker of its own: wait until that many brokers are up.",
        f"replicas={replicas}",
        "for attempt in $$(seq 90); do",
        "  brokers=$$(/opt/kafka/bin/kafka-broker-api-versions.sh $$admin 2>/dev/null "
        "| grep -c '(id: ' || true)",
        '  [ "$$brokers" -ge "$$replicas" ] && break',
        '  echo "$$brokers of $$replicas brokers up (attempt $$attempt)"; sleep 2',
        "done",
        'topics="/opt/kafka/bin/kafka-topics.sh $$admin --create --if-not-exists '
        "--replication-factor $$replicas \\",
        f'  --config min.insync.replicas={in_sync}"',
        *_topic_lines(),
        f"for user in {' '.join(users)}; do",
        "  /opt/kafka/bin/kafka-configs.sh $$admin --alter --entity-type users --entity-name $$user \\",
        '    --add-config "SCRAM-SHA-512=[password=$$(cat /run/secrets/kafka-$$user)]"',
        "done",
        'acl="/opt/kafka/bin/kafka-acls.sh $$admin --add --allow-principal"',
        *_acl_lines(),
    )
    return Note(
        "Once: the services' SCRAM users, the topics and the ACLs, as stack/bootstrap.py makes them "
        "(partitions bound how many processors and savers share the work). An existing topic is left as "
        "it is; the users are set from the secrets each time, so a volume made before an account gets it.",
        {
            "image": KAFKA_IMAGE,
            "restart": "no",
            "depends_on": _healthy("kafka"),
            "command": script,
            "secrets": _secrets(*credentials.KAFKA_ACCOUNTS),
        },
    )


def _topic_lines() -> list[str]:
    lines = []
    for topic, partitions in bootstrap.topic_partitions(SINGLE).items():
        configs = bootstrap.TOPIC_CONFIGS.get(topic, {})
        extra = "".join(f" --config {key}={value}" for key, value in configs.items())
        lines.append(f"$$topics --topic {topic} --partitions {partitions}{extra}")
    return lines


def _acl_lines() -> list[str]:
    """bootstrap.KAFKA_ACLS, one command per run of a principal's operation on several resources."""
    lines = []
    runs = groupby(bootstrap.KAFKA_ACLS, key=lambda acl: (acl[0].user, acl[3]))
    for (user, operation), acls in runs:
        resources = " ".join(f"--{kind.lower()} {name}" for _, kind, name, _ in acls)
        lines.append(f"$$acl User:{user} --operation {operation.capitalize()} {resources}")
    return lines


# --- The services ---

HEALTH_SCRIPT = """\
import os, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
port = next(v for k, v in os.environ.items() if k.endswith("_GRPC_PORT"))
with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
raise SystemExit(reply.status != health_pb2.HealthCheckResponse.SERVING)
"""
SERVICE: dict[str, object] = {
    "build": {"context": ".", "target": "services"},
    "restart": "unless-stopped",
    "stop_grace_period": Note(
        "The services drain for up to shutdown_grace_s (10 s) on SIGTERM; as stop_wait_s in stack/parts.py.",
        f"{STOP_WAIT_S}s",
    ),
    "healthcheck": {
        "test": Note(
            "SERVING from the service's own gRPC health service, on its METRICS_<NAME>_GRPC_PORT.",
            ["CMD", "python", "-c", HEALTH_SCRIPT],
        ),
        "interval": "10s",
        "timeout": "5s",
        "retries": 12,
        "start_period": "30s",
    },
}
# The servers each service waits for to be healthy, beyond the topics, users and ACLs (kafka-init),
# with why where it is not plain.
DEPENDS_ON: Mapping[str, Mapping[str, str]] = {
    "receiver": {},
    "processor": {"redis": "", "postgres": ""},
    "saver": {"postgres": ""},
    "assessor": {
        "postgres": "",
        "saver": "The saver reports SERVING once its migrations are applied: the tables the assessor reads.",
    },
    "notifier": {"postgres": ""},
    "bridge": {"mosquitto": ""},
    "registry": {"postgres": "", "mosquitto": "It keeps the devices' MQTT accounts at the brokers."},
}
# The services that take readings: in production (this file) they require registered devices.
STRICT_SERVICES = ("receiver", "bridge")
ENV_NOTES = {
    "METRICS_PROCESSOR_REDIS_CLUSTER": "The cluster profile: a Redis Cluster (the URL names a seed node), "
    "and a round waits for the replica of each master it wrote to before its offsets are committed.",
    "METRICS_ASSESSOR_REPLICA_DSN": "The cluster profile: the queries go to the streaming replica (the same "
    "role, replicated) while it answers and keeps up; empty: the primary only.",
    "METRICS_NOTIFIER_ALLOWED_NETWORKS": "Webhooks go to public addresses only: none on the Compose network "
    "(its servers) or the containers' loopback. Name the private networks of your receivers here (CIDRs, "
    "commas).",
}


def _deployment(settings: StackSettings) -> Deployment:
    """Where a container finds the servers: by their names on the Compose network."""
    return Deployment(
        kafka=",".join(f"{_numbered('kafka', b.node_id)}:{KAFKA_INTERNAL}" for b in settings.kafka_brokers),
        redis=f"redis:{REDIS_PORT}",
        postgres=f"postgres:{POSTGRES_PORT}",
        secrets=SECRETS,
        webhook_networks=(),
        mqtt=",".join(f"{b.name}:{SINGLE.mqtt_internal_port}" for b in settings.mqtt_brokers),
        bridge_state=PurePosixPath("/var/lib/metrics/bridge"),
        bridges=len(settings.instances("bridge")),
        postgres_replica=f"{REPLICA}:{POSTGRES_PORT}" if settings.cluster else None,
        redis_cluster=settings.cluster,
        token_keys=PurePosixPath(REGISTRY_MOUNTED["jwt/keys"]),
        device_ca=(
            PurePosixPath(REGISTRY_MOUNTED["tls/ca.pem"]),
            PurePosixPath(REGISTRY_MOUNTED["tls/ca-key.pem"]),
        ),
        mqtt_tls=",".join(f"{b.name}:{SINGLE.mqtt_tls_port}" for b in settings.mqtt_brokers),
    )


def _services(variables: Variables) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in SERVICES:
        instances = [_service(name, n, variables) for n in range(1, CLUSTER_INSTANCES[name] + 1)]
        first = variant("service", SERVICE, instances[0])
        out[name] = Anchor(name, first) if len(instances) > 1 else first
        out |= {_numbered(name, n): variant(name, instances[0], i) for n, i in enumerate(instances[1:], 2)}
    return out


def _service(name: str, number: int, variables: Variables) -> dict[str, object]:
    """A container of the service: the first is the single node's; the others, the cluster's, are the
    same container but for the published ports and the name Envoy finds them by."""
    env = _service_env(name, number, variables)
    secrets = [str(v).removeprefix(f"{SECRETS}/") for k, v in env.items() if k.endswith("_PASSWORD_FILE")]
    depends: dict[str, object] = {"kafka-init": {"condition": "service_completed_successfully"}}
    depends |= {
        server: _note(why, {"condition": "service_healthy"}) for server, why in DEPENDS_ON[name].items()
    }
    definition = {
        **SERVICE,
        "command": ["python", "-m", name],
        "environment": env,
        "secrets": list(dict.fromkeys(secrets)),
        "ports": [_port_of(f"{name}_grpc_port")] if number == 1 else [],
        "depends_on": depends,
    }
    if number > 1 and name in PUBLIC_SERVICES:
        definition["networks"] = {"default": {"aliases": [name]}}
    if name == "bridge":  # its arrival stamps outlive the container (bridge/stamps.py)
        definition["volumes"] = [f"bridge-{number}-state:{_deployment(SINGLE).bridge_state}"]
    if name == "registry":  # what devices' credentials are made with
        definition["volumes"] = [
            f"{SECRETS_FOLDER}/{source}:{target}:ro" for source, target in REGISTRY_MOUNTED.items()
        ]
    return _cluster_profile(definition, number)


def _service_env(name: str, number: int, variables: Variables) -> dict[str, object]:
    """The settings of stack/service_env.py with the Compose network's names for the `number`-th
    instance; where the topologies differ, a variable."""
    # Each container has the ports to itself: the first instance's.
    instance = dataclasses.replace(SINGLE.instances(name)[0], number=number)
    single, cluster = (service_env(name, _deployment(s), instance) for s in (SINGLE, CLUSTER))
    if extra := set(single) - set(cluster):
        raise ValueError(f"{name}: {sorted(extra)} only in the single node")
    env: dict[str, object] = {}
    for setting, value in cluster.items():
        # A password file only the cluster uses is mounted and named always: unused without its DSN.
        if single.get(setting) == value or (setting.endswith("_PASSWORD_FILE") and setting not in single):
            env[setting] = _note(ENV_NOTES.get(setting), value)
            continue
        if setting not in SETTING_VARIABLES:
            raise KeyError(f"{name}: {setting} differs between the topologies; give it a variable")
        pair = (_setting(name, setting, SINGLE), value)
        env[setting] = _note(ENV_NOTES.get(setting), variables.ref(SETTING_VARIABLES[setting], *pair))
    env[f"METRICS_{name.upper()}_GRPC_HOST"] = Note(
        "Every address of the container: Envoy and the other containers reach it on the Compose network.",
        "0.0.0.0",  # noqa: S104
    )
    if name in STRICT_SERVICES:
        env["METRICS_REQUIRE_REGISTERED_DEVICES"] = Note(
            "Production: only sensors of enabled registered devices are taken (docs/devices.md). "
            "Register devices first (POST /v1/devices or :batchCreate), or set false to take any sensor.",
            "true",
        )
    return env


def _setting(name: str, setting: str, settings: StackSettings) -> str:
    """What service `name` takes for `setting` in a topology: what stack/service_env.py gives it, or
    where it gives nothing, the default of the service's settings."""
    given = service_env(name, _deployment(settings), settings.instances(name)[0])
    if setting in given:
        return given[setting]
    field_name = setting.removeprefix("METRICS_").removeprefix(f"{name.upper()}_").lower()
    (default,) = [f.default for f in dataclasses.fields(SETTINGS_CLASSES[name]) if f.name == field_name]
    return str(default).lower() if isinstance(default, bool) else str(default)


# --- Mosquitto ---

MOSQUITTO_IMAGE = "eclipse-mosquitto:2.0"
MOSQUITTO_CONF = "deploy/compose/mosquitto.conf"
MOSQUITTO_DATA = PurePosixPath("/mosquitto/data")
MOSQUITTO_FILES = mosquitto.Files(
    state=MOSQUITTO_DATA,
    certificate=PurePosixPath(compose_secrets.MOUNTED["tls/server.pem"]),
    private_key=PurePosixPath(compose_secrets.MOUNTED["tls/server-key.pem"]),
    services_passwords=MOSQUITTO_DATA / "services.passwd",
    services_acl=MOSQUITTO_DATA / "services.acl",
    plaintext_acl=MOSQUITTO_DATA / "plaintext.acl",
    plugin=PurePosixPath("/usr/lib/mosquitto_dynamic_security.so"),
)


def render_mosquitto_conf() -> str:
    """deploy/compose/mosquitto.conf: the local stack's, on every address of the container, without
    the plaintext listener (as Envoy's image has none)."""
    (broker,) = SINGLE.mqtt_brokers  # each container has the ports to itself: the first broker's
    return mosquitto.render(broker, False, MOSQUITTO_FILES, host="0.0.0.0")  # noqa: S104 - the container's


def _mosquittos() -> dict[str, object]:
    """The broker, and in the cluster profile the second: the same container but for its volume and
    published port."""
    first, *others = (_mosquitto(b) for b in CLUSTER.mqtt_brokers)
    numbered = {_numbered("mosquitto", n): variant("mosquitto", first, o) for n, o in enumerate(others, 2)}
    return {"mosquitto": Anchor("mosquitto", first), **numbered}


def _mosquitto(broker: MqttBroker) -> dict[str, object]:
    name = broker.name
    host_port = "METRICS_MQTT_TLS_PORT" if broker.number == 1 else f"METRICS_MQTT_{broker.number}_TLS_PORT"
    where, bridge, admin = MOSQUITTO_FILES, credentials.MQTT_BRIDGE, credentials.MQTT_ADMIN
    acl = mosquitto.SERVICES_ACL.replace("$", "$$").replace("\n", "\\n")
    script = [
        "umask 077",
        # The bridges' password, hashed by mosquitto_passwd: none in clear on the volume.
        f'printf "%s:%s\\n" {bridge.user} "$$(cat {_file(bridge)})" > {where.services_passwords}',
        f"mosquitto_passwd -U {where.services_passwords}",
        f"printf '{acl}' > {where.services_acl}",
        # The device registry (dynamic security), made once with its admin (its password on the
        # command line for that moment, inside the container); the broker keeps it.
        f"[ -f {where.dynsec} ] ||",
        f'  mosquitto_ctrl dynsec init {where.dynsec} {admin.user} "$$(cat {_file(admin)})"',
        f"chown -R mosquitto:mosquitto {MOSQUITTO_DATA}",
        # As root, the broker drops to the mosquitto user once its listeners are open.
        "exec mosquitto -c /mosquitto/config/mosquitto.conf",
    ]
    definition = {
        "image": MOSQUITTO_IMAGE,
        "restart": "unless-stopped",
        "command": Note(
            "The image has sh (no bash): the bridges' password file, the device registry, the broker.",
            ["sh", "-ec", "".join(f"{line}\n" for line in script)],
        ),
        "secrets": _secrets(bridge, admin),
        "ports": Note(
            "Only the TLS port (devices, a username and password each: make device-credentials); the "
            "services' port is on the Compose network only.",
            [f"{_on_host(host_port, broker.tls_port)}:{SINGLE.mqtt_tls_port}"],
        ),
        "volumes": [
            f"./{MOSQUITTO_CONF}:/mosquitto/config/mosquitto.conf:ro",
            f"{SECRETS_FOLDER}/tls/server.pem:{where.certificate}:ro",
            f"{SECRETS_FOLDER}/tls/server-key.pem:{where.private_key}:ro",
            f"{name}-data:{MOSQUITTO_DATA}",
        ],
        "healthcheck": {
            "test": Note(
                "The bridges' account answered on the services' port, as stack/probes.py asks.",
                [
                    "CMD-SHELL",
                    f"mosquitto_sub -V mqttv5 -p {SINGLE.mqtt_internal_port} -u {bridge.user} "
                    f"-P \"$$(cat {_file(bridge)})\" -t '$$SYS/broker/uptime' -C 1 -W 5",
                ],
            ),
            "interval": "5s",
            "timeout": "10s",
            "retries": 12,
        },
    }
    return _cluster_profile(definition, broker.number)


# --- Envoy ---


def _envoy() -> dict[str, object]:
    mounts = [f"{SECRETS_FOLDER}/{source}:{target}:ro" for source, target in compose_secrets.MOUNTED.items()]
    request = "GET /ready HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n"
    ready = (
        f"exec 3<>/dev/tcp/127.0.0.1/{SINGLE.envoy_admin_port} && printf '{request}' >&3 && grep -q LIVE <&3"
    )
    return {
        "build": {"context": ".", "target": "envoy"},
        "restart": "unless-stopped",
        "depends_on": _healthy(*SERVICES),
        "ports": Note(
            "Only the TLS port, where every request needs a token; the image has no plaintext listener, and "
            "its admin interface listens on the container's loopback (the healthcheck below).",
            [_port_of("envoy_tls_port")],
        ),
        "volumes": Note(
            "The certificate, the CA of device certificates (mutual TLS: those it signed, make "
            f"device-cert with METRICS_STATE_DIR={SECRETS_FOLDER.removeprefix('./')}) and the token keys' "
            "JWKS that `make compose-secrets` writes (files readable in the container, their folder only by "
            "its owner on the host).",
            mounts,
        ),
        "healthcheck": {
            "test": Note(
                "The image has bash but no HTTP client: GET /ready of the admin interface, as "
                "stack/probes.py.",
                ["CMD", "bash", "-c", ready],
            ),
            "interval": "5s",
            "timeout": "5s",
            "retries": 12,
        },
    }
