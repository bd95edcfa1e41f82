"""The processes of the local stack and how each is started."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from stack import backup, certs, credentials, envoy_config, mosquitto, prepare, prometheus_config, service_env
from stack.settings import ROOT, SERVICES, Instance, KafkaBroker, MqttBroker, RedisNode, StackSettings

# How long a part may take to stop once signalled (the services drain for up to shutdown_grace_s,
# 10 s), and the servers, which write their data out first.
STOP_WAIT_S, SERVER_STOP_WAIT_S = 30, 60


@dataclass(frozen=True)
class Part:
    name: str
    command: tuple[str, ...]
    port: int
    # "server" parts start first; in the cluster topology the "replica" (PostgreSQL's) once the
    # primary holds the database; the services and Envoy once the servers answer.
    stage: str
    user: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    stop_signal: str = "TERM"
    stop_wait_s: int = STOP_WAIT_S
    # What it is (its name, or of one of several: "kafka" for kafka-2): how it is probed.
    kind: str = ""

    @property
    def what(self) -> str:
        return self.kind or self.name


# A digest of the code and configuration a process runs: when it changes, `make run` restarts it.
DIGEST = "METRICS_STACK_INPUTS_DIGEST"


def digest(*paths: Path) -> str:
    sha = hashlib.sha256()
    for path in paths:
        files = (
            [path] if path.is_file() else sorted(p for p in path.rglob("*.*") if "__pycache__" not in p.parts)
        )
        for file in files:
            sha.update(str(file).encode())
            sha.update(file.read_bytes())
    return sha.hexdigest()[:16]


def numbered(settings: StackSettings, kind: str, number: int) -> str:
    """A part's name: its kind, or in the cluster topology its kind and number (kafka-2)."""
    return f"{kind}-{number}" if settings.cluster else kind


def parts(settings: StackSettings) -> list[Part]:
    """The parts and their commands; `prepare.everything` creates what the commands refer to."""
    paths = prepare.paths(settings)
    servers = [
        _postgres(settings, "postgres", paths.postgres_data, settings.postgres_port, "server"),
        *(_redis(settings, node) for node in settings.redis_nodes),
        *(_kafka(settings, broker) for broker in settings.kafka_brokers),
        *(_mosquitto(settings, broker) for broker in settings.mqtt_brokers),
    ]
    if settings.cluster:
        replica = prepare.postgres_replica_data(settings)
        servers.append(
            _postgres(settings, "postgres-replica", replica, settings.postgres_replica_port, "replica")
        )
    services = [
        _service(settings, name, instance) for name in SERVICES for instance in settings.instances(name)
    ]
    envoy = Part(
        "envoy",
        (str(VENV_BIN / "envoy"), "-c", str(paths.envoy_yaml), "--disable-hot-restart", "--log-level", "warn",
         "--concurrency", str(settings.envoy_threads)),
        settings.envoy_tls_port, "service",
        # Envoy reads certificates, keys and the files it serves at its start: a new one restarts it.
        env={DIGEST: digest(paths.envoy_yaml, ROOT / "gen" / "metrics.binpb", *_envoy_files(settings))},
    )  # fmt: skip
    return [*servers, *services, envoy, *_observers(settings, paths)]


VENV_BIN = Path(sys.executable).parent


# The server's settings of every deployment (docker-compose.yml's too).
POSTGRES_OPTIONS = (
    "shared_buffers=256MB", "max_connections=200", "synchronous_commit=on", "max_wal_size=2GB",
)  # fmt: skip


def _postgres(settings: StackSettings, name: str, data: Path, port: int, stage: str) -> Part:
    # The primary archives its WAL for point-in-time restores (stack/backup.py).
    options = (*POSTGRES_OPTIONS, *(backup.server_options(settings) if name == "postgres" else ()))
    return Part(
        name,
        (str(settings.postgres_bin / "postgres"), "-D", str(data),
         "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}",
         "-c", f"unix_socket_directories={settings.postgres_socket_dir}",
         "-c", "password_encryption=scram-sha-256",
         *(arg for option in options for arg in ("-c", option))),
        port, stage, user=prepare.run_as("postgres"),
        # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
        stop_signal="INT", stop_wait_s=SERVER_STOP_WAIT_S, kind="postgres",
    )  # fmt: skip


def _redis(settings: StackSettings, node: RedisNode) -> Part:
    paths = prepare.paths(settings)
    cluster = (
        ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
         "--cluster-port", str(node.bus_port), "--cluster-node-timeout", str(REDIS_NODE_TIMEOUT_MS))
        if settings.cluster else ()
    )  # fmt: skip
    # A configuration file comes first, before the options.
    replication = (str(prepare.redis_replication_conf(settings)),) if settings.cluster else ()
    return Part(
        numbered(settings, "redis", node.number),
        ("redis-server", *replication, "--bind", "127.0.0.1", "--port", str(node.port),
         "--dir", str(prepare.redis_node_dir(settings, node)),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "yes",
         "--aclfile", str(paths.redis_acl), *cluster),
        node.port, "server", user=prepare.run_as("redis"),
        env={DIGEST: digest(paths.redis_acl, *map(Path, replication))}, kind="redis",
    )  # fmt: skip


# How long a Redis Cluster master may not answer before its replica takes over.
REDIS_NODE_TIMEOUT_MS = 3000


def _kafka(settings: StackSettings, broker: KafkaBroker) -> Part:
    libs = prepare.paths(settings).kafka_libs
    properties = prepare.kafka_broker_paths(settings, broker)[0]
    agent = f"-javaagent:{prepare.jmx_agent(libs)}=127.0.0.1:{broker.metrics_port}:{prepare.JMX_EXPORTER}"
    return Part(
        numbered(settings, "kafka", broker.node_id),
        ("java", f"-Xms{settings.kafka_heap}", f"-Xmx{settings.kafka_heap}", "-XX:+UseG1GC",
         "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true", agent,
         *prepare.kafka_java_options(libs), "kafka.Kafka", str(properties)),
        broker.port, "server", stop_wait_s=SERVER_STOP_WAIT_S,
        env={DIGEST: digest(properties, prepare.KAFKA_DIR / "log4j2.properties", prepare.JMX_EXPORTER)},
        kind="kafka",
    )  # fmt: skip


def _mosquitto(settings: StackSettings, broker: MqttBroker) -> Part:
    where = mosquitto.files(settings, broker)
    conf = mosquitto.conf_path(settings, broker)
    return Part(
        numbered(settings, "mosquitto", broker.number),
        ("mosquitto", "-c", str(conf)),
        broker.tls_port, "server", user=prepare.run_as("mosquitto"),
        # It reads its configuration, certificate and password files at its start (the plugin's
        # state is its own: it writes it).
        env={DIGEST: digest(conf, Path(where.certificate), Path(where.services_passwords))},
        kind="mosquitto",
    )  # fmt: skip


def _service(settings: StackSettings, name: str, instance: Instance) -> Part:
    return Part(
        numbered(settings, name, instance.number),
        (str(VENV_BIN / "python"), "-m", name),
        instance.grpc_port,
        "service",
        env={
            **service_env.service_env(name, service_env.local(settings), instance),
            DIGEST: digest(ROOT / name, ROOT / "runtime", ROOT / "gen", ROOT / "uv.lock"),
        },
        kind=name,
    )


def _observers(settings: StackSettings, paths: prepare.Paths) -> list[Part]:
    """Prometheus and the exporters of PostgreSQL and Redis (Debian's packages)."""
    local = "127.0.0.1"
    monitor = credentials.POSTGRES_MONITOR
    return [
        Part(
            "prometheus",
            ("prometheus", f"--config.file={paths.prometheus_yml}",
             f"--storage.tsdb.path={paths.prometheus_data}",
             f"--storage.tsdb.retention.time={settings.prometheus_retention}",
             f"--web.listen-address={local}:{settings.prometheus_port}", "--log.level=warn"),
            settings.prometheus_port, "service",
            # It reads its configuration and rules at its start.
            env={DIGEST: digest(paths.prometheus_yml, prometheus_config.RULES)},
        ),
        Part(
            "pg-exporter",
            ("prometheus-postgres-exporter",
             f"--web.listen-address={local}:{settings.postgres_exporter_port}", "--log.level=warn"),
            settings.postgres_exporter_port, "service",
            env={
                "DATA_SOURCE_URI": f"{local}:{settings.postgres_port}/metrics?sslmode=disable",
                "DATA_SOURCE_USER": monitor.user,
                "DATA_SOURCE_PASS_FILE": str(credentials.password_file(settings.secrets_dir, monitor)),
            },
        ),
        Part(
            "redis-exporter",
            ("prometheus-redis-exporter", f"--web.listen-address={local}:{settings.redis_exporter_port}",
             f"--redis.addr=redis://{local}:{settings.redis_port}",
             f"--redis.user={credentials.REDIS_MONITOR.user}",
             f"--redis.password-file={paths.redis_exporter_passwords}", "--log-format=txt"),
            settings.redis_exporter_port, "service",
            env={DIGEST: digest(paths.redis_exporter_passwords)},
        ),
    ]  # fmt: skip


def _envoy_files(settings: StackSettings) -> list[Path]:
    tls = certs.paths(settings)  # made by prepare.everything; listing the parts makes nothing
    ca = certs.client_ca(settings)
    # Not the key set: Envoy follows <state>/jwt/jwt_authn.yaml by itself (a rotation restarts nothing).
    return [tls.certificate, tls.private_key, *([ca] if ca else []),
            envoy_config.CONSOLE.directory, envoy_config.API_DOCS.directory]  # fmt: skip


STOP_ORDER = {"server": 100, "replica": 200, "service": 300}


def supervisord_conf(settings: StackSettings, all_parts: list[Part]) -> str:
    """supervisord's configuration: every part, started on request (not at supervisord's start)."""
    state, logs = settings.state_dir, settings.logs_dir
    lines = [
        "[unix_http_server]", f"file={state / 'supervisor.sock'}", "chmod=0700", "",
        "[supervisord]", f"logfile={logs / 'supervisord.log'}", f"pidfile={state / 'supervisord.pid'}",
        f"childlogdir={logs}", f"directory={ROOT}", "logfile_maxbytes=10MB", "logfile_backups=1", "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
        "[supervisorctl]", f"serverurl=unix://{state / 'supervisor.sock'}", "",
    ]  # fmt: skip
    for part in all_parts:
        lines += [
            f"[program:{part.name}]",
            f"command={_escape(' '.join(_quote(a) for a in part.command))}",
            f"directory={ROOT}",
            "autostart=false",
            "autorestart=true",
            "startsecs=1",
            "startretries=10",
            f"stopsignal={part.stop_signal}",
            f"stopwaitsecs={part.stop_wait_s}",
            # Lower starts first and stops last: the services stop before the servers they use.
            f"priority={STOP_ORDER[part.stage]}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={logs / (part.name + '.log')}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=2",
        ]
        if part.user:
            lines.append(f"user={part.user}")
        if part.env:
            pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(part.env.items()))
            lines.append(f"environment={pairs}")
        lines.append("")
    return "\n".join(lines)


def _quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_./=:@,+*%" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _escape(value: str) -> str:
    """supervisord expands %(name)s in values: a literal % is written %%."""
    return value.replace("%", "%%")
