"""Ports and places of the local stack; METRICS_<NAME> environment variables override them."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from runtime import settings

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("receiver", "processor", "saver", "assessor", "notifier", "bridge", "registry")
# `make run` is one node of each server; `make run-cluster` (topology "cluster") runs 3 Kafka
# brokers, a Redis Cluster of 3 masters with a replica each, a PostgreSQL primary with a streaming
# replica, 2 MQTT brokers (Mosquitto has no clustering: devices are given both, every bridge
# subscribes to both), and two instances of the services but the notifier and the registry, behind
# the same front door.
TOPOLOGIES = ("single", "cluster")
CLUSTER_INSTANCES = {
    "receiver": 2, "processor": 2, "saver": 2, "assessor": 2, "notifier": 1, "bridge": 2, "registry": 1,
}  # fmt: skip
KAFKA_BROKERS, REDIS_NODES, MQTT_BROKERS = 3, 6, 2
# In the cluster topology, the n-th Kafka broker's ports are the first's + (n - 1) * KAFKA_STEP
# (59092 and 59093, 59094 and 59095, ...), the n-th Redis node's the first's + (n - 1), a second
# instance's (and a second MQTT broker's) the first's + INSTANCE_STEP.
KAFKA_STEP, INSTANCE_STEP = 2, 10
# A broker's proxied listener and the port of the proxy in front of it (KafkaBroker.proxied_port).
KAFKA_PROXIED_OFFSET, KAFKA_PROXY_OFFSET = 100, 200
# A Redis node's cluster bus port is its port - REDIS_BUS_OFFSET (Redis's default, + 10,000, would
# pass 65,535 for the stack's ports).
REDIS_BUS_OFFSET = 10_000
# Those Envoy routes to (the processor for its RulesService); the saver's health stays inside.
PUBLIC_SERVICES = ("receiver", "processor", "assessor", "notifier", "registry")


@dataclass(frozen=True)
class StackSettings:
    # "single" (`make run`: one node of each server) or "cluster" (`make run-cluster`: 3 Kafka brokers,
    # a Redis Cluster, a PostgreSQL replica, two instances of each service but the notifier).
    topology: str = "single"
    # The front door's TLS listener, a token or device certificate on every request: the one to expose.
    envoy_tls_port: int = 8443
    # The front door's plaintext listener, without tokens: loopback, development.
    envoy_port: int = 8080
    # false (off): no plaintext listener, only the TLS ones (Envoy's and the MQTT broker's).
    envoy_plaintext: bool = True
    # Envoy's admin interface (readiness, its Prometheus statistics), on loopback.
    envoy_admin_port: int = 9901
    # The MQTT broker's TLS listener (Mosquitto): devices, each with a username and password (make
    # device-credentials): the one to expose. In the cluster topology the second broker's MQTT ports
    # are its first's + 10.
    mqtt_tls_port: int = 8883
    # The MQTT broker's plaintext listener, without credentials: loopback, development.
    mqtt_port: int = 1883
    # The MQTT broker's listener for the services (the bridges subscribe there): never exposed.
    mqtt_internal_port: int = 1884
    # The TLS listener's certificate (PEM); unset, `make run` makes a local CA and a certificate it
    # signs, in <state_dir>/tls.
    tls_certificate_file: Path | None = None
    # The private key of tls_certificate_file (PEM): both are set, or neither.
    tls_private_key_file: Path | None = None
    # The CA of device certificates (mutual TLS instead of a token); unset: the local CA when the
    # certificate is the local one, else no device certificates.
    tls_client_ca_file: Path | None = None
    # PostgreSQL; in the cluster topology its streaming replica listens on the next port.
    postgres_port: int = 55432
    # Redis; in the cluster topology the 6 nodes of the Redis Cluster are on this port and the next 5.
    redis_port: int = 56379
    # Kafka's broker; in the cluster topology the n-th broker's is this + 2 * (n - 1).
    kafka_port: int = 59092
    # Kafka's KRaft controller; in the cluster topology the n-th broker's is this + 2 * (n - 1).
    kafka_controller_port: int = 59093
    # The receiver's gRPC port, handed to it as METRICS_RECEIVER_GRPC_PORT (each service's likewise);
    # in the cluster topology a second instance's is this + 10.
    receiver_grpc_port: int = 50051
    # The processor's gRPC port (its second instance's: + 10).
    processor_grpc_port: int = 50052
    # The saver's gRPC port (its second instance's: + 10).
    saver_grpc_port: int = 50053
    # The assessor's gRPC port (its second instance's: + 10).
    assessor_grpc_port: int = 50054
    # The notifier's gRPC port.
    notifier_grpc_port: int = 50055
    # The MQTT bridge's gRPC port (its health only; its second instance's: + 10).
    bridge_grpc_port: int = 50056
    # The registry's gRPC port (DevicesService).
    registry_grpc_port: int = 50057
    # The receiver's Prometheus metrics (/metrics), handed to it as METRICS_RECEIVER_METRICS_PORT (each
    # service's likewise); in the cluster topology a second instance's is this + 10.
    receiver_metrics_port: int = 51051
    # The processor's Prometheus metrics (its second instance's: + 10).
    processor_metrics_port: int = 51052
    # The saver's Prometheus metrics (its second instance's: + 10).
    saver_metrics_port: int = 51053
    # The assessor's Prometheus metrics (its second instance's: + 10).
    assessor_metrics_port: int = 51054
    # The notifier's Prometheus metrics.
    notifier_metrics_port: int = 51055
    # The MQTT bridge's Prometheus metrics, and the broker's $SYS figures it reads (its second
    # instance's: + 10).
    bridge_metrics_port: int = 51056
    # The registry's Prometheus metrics.
    registry_metrics_port: int = 51057
    # Prometheus (Debian's package), scraping the services, Envoy and the exporters; Envoy routes
    # /prometheus/api/v1/ to its API (the console's health page).
    prometheus_port: int = 9090
    # The broker's metrics (the JMX exporter's agent in Kafka's process); in the cluster topology the
    # n-th broker's is this + n - 1.
    kafka_metrics_port: int = 9404
    # PostgreSQL's Prometheus exporter (Debian's package).
    postgres_exporter_port: int = 9187
    # Redis's Prometheus exporter (Debian's package), which scrapes each node on request.
    redis_exporter_port: int = 9121
    # How long Prometheus keeps its samples.
    prometheus_retention: str = "15d"
    # Where the notifier may deliver webhooks besides public addresses: this machine.
    notifier_allowed_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # Partitions of the metrics topic, made with it (`make run` does not change an existing topic): at
    # most this many processors and savers share the work.
    metrics_partitions: int = 8
    # Partitions of the events topic, made with it: at most this many members of each group reading
    # it (savers, notifiers) share the work.
    events_partitions: int = 4
    # The Kafka broker's JVM heap (-Xms and -Xmx), e.g. 512m or 1g.
    kafka_heap: str = "512m"
    # Envoy's worker threads; 0 = one per core but one, which the receivers need more (measured on
    # 2 cores: one Envoy thread passes more single calls than two, 3,850 vs 2,900-3,700 a second).
    envoy_concurrency: int = 0
    # State and logs of every part; the cluster topology's default is <checkout>/.stack-cluster.
    state_dir: Path = ROOT / ".stack"
    # `make run` refuses to start with less free disk than this: PostgreSQL and Kafka stop when it is full.
    min_free_mb: int = 2048
    # The PostgreSQL server binaries (Debian's postgresql package).
    postgres_bin: Path = Path("/usr/lib/postgresql/15/bin")

    @property
    def cluster(self) -> bool:
        return self.topology == "cluster"

    @property
    def ports(self) -> list[int]:
        """Every port the stack listens on."""
        single = [
            value
            for name, value in vars(self).items()
            if name.endswith("_port") and (name not in ("envoy_port", "mqtt_port") or self.envoy_plaintext)
        ]
        standbys = [i for s in SERVICES if (i := self.standby(s)) is not None]
        single += [p for i in standbys for p in (i.grpc_port, i.metrics_port)]
        single += [p for b in self.kafka_brokers for p in (b.proxied_port, b.proxy_port)]
        if not self.cluster:
            return single
        extra = [p for b in self.kafka_brokers[1:] for p in (b.port, b.controller_port, b.metrics_port)]
        extra += [n.port for n in self.redis_nodes[1:]] + [n.bus_port for n in self.redis_nodes]
        extra += [self.postgres_replica_port]
        extra += [p for b in self.mqtt_brokers[1:] for p in b.ports(self.envoy_plaintext)]
        extra += [i.grpc_port for s in SERVICES for i in self.instances(s)[1:]]
        extra += [i.metrics_port for s in SERVICES for i in self.instances(s)[1:]]
        return single + extra

    @property
    def kafka_brokers(self) -> list[KafkaBroker]:
        count = KAFKA_BROKERS if self.cluster else 1
        return [
            KafkaBroker(
                n + 1,
                self.kafka_port + n * KAFKA_STEP,
                self.kafka_controller_port + n * KAFKA_STEP,
                self.kafka_metrics_port + n,
            )
            for n in range(count)
        ]

    @property
    def redis_nodes(self) -> list[RedisNode]:
        count = REDIS_NODES if self.cluster else 1
        return [
            RedisNode(n + 1, self.redis_port + n, self.redis_port + n - REDIS_BUS_OFFSET)
            for n in range(count)
        ]

    @property
    def mqtt_brokers(self) -> list[MqttBroker]:
        count = MQTT_BROKERS if self.cluster else 1
        return [
            MqttBroker(
                n + 1,
                self.mqtt_tls_port + n * INSTANCE_STEP,
                self.mqtt_port + n * INSTANCE_STEP,
                self.mqtt_internal_port + n * INSTANCE_STEP,
            )
            for n in range(count)
        ]

    @property
    def postgres_replica_port(self) -> int:
        """The streaming replica's, in the cluster topology."""
        return self.postgres_port + 1

    def instances(self, service: str) -> list[Instance]:
        """The service's instances: one, or in the cluster topology CLUSTER_INSTANCES[service]."""
        grpc_port = getattr(self, f"{service}_grpc_port")
        metrics_port = getattr(self, f"{service}_metrics_port")
        count = CLUSTER_INSTANCES[service] if self.cluster else 1
        return [
            Instance(n + 1, grpc_port + n * INSTANCE_STEP, metrics_port + n * INSTANCE_STEP)
            for n in range(count)
        ]

    def standby(self, service: str) -> Instance | None:
        """For a public service with one instance, where a second runs while `make upgrade` restarts
        the first (stack/upgrade.py): Envoy lists it, nothing runs there otherwise. None for the
        others (two instances: one serves while the other restarts)."""
        if service not in PUBLIC_SERVICES or len(self.instances(service)) > 1:
            return None
        first = self.instances(service)[0]
        return Instance(2, first.grpc_port + INSTANCE_STEP, first.metrics_port + INSTANCE_STEP)

    @property
    def envoy_threads(self) -> int:
        return self.envoy_concurrency or max(1, len(os.sched_getaffinity(0)) - 1)

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def secrets_dir(self) -> Path:
        """The password of each server account (stack/credentials.py)."""
        return self.state_dir / "secrets"

    @property
    def postgres_socket_dir(self) -> Path:
        """Where PostgreSQL's unix socket is: the stack's own way in as the superuser."""
        return self.state_dir / "postgres" / "run"

    def postgres_dsn(self, role: str, port: int | None = None) -> str:
        """A DSN without the password (stack/access.py adds it), of the primary or another port."""
        return postgres_dsn(role, f"127.0.0.1:{port or self.postgres_port}")

    def redis_url(self, user: str) -> str:
        """A URL without the password (stack/access.py adds it)."""
        return redis_url(user, f"127.0.0.1:{self.redis_port}")

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{b.port}" for b in self.kafka_brokers)


def postgres_dsn(role: str, address: str) -> str:
    """The metrics database at `address` (host:port) as `role`, without the password."""
    return f"postgresql://{role}@{address}/metrics"


def redis_url(user: str, address: str) -> str:
    """Redis at `address` (host:port) as `user`, without the password."""
    return f"redis://{user}@{address}/0"


@dataclass(frozen=True)
class KafkaBroker:
    node_id: int
    port: int
    controller_port: int
    metrics_port: int

    @property
    def proxied_port(self) -> int:
        """A second client listener, which tells clients to reach it through `proxy_port`: where
        `make test-network` puts Toxiproxy between the services and the broker (tests/network/)."""
        return self.port + KAFKA_PROXIED_OFFSET

    @property
    def proxy_port(self) -> int:
        return self.port + KAFKA_PROXY_OFFSET


@dataclass(frozen=True)
class MqttBroker:
    number: int
    tls_port: int  # devices, with credentials
    port: int  # plaintext, loopback, without credentials (while envoy_plaintext)
    internal_port: int  # the bridges'

    def ports(self, plaintext: bool) -> list[int]:
        return [self.tls_port, self.internal_port, *([self.port] if plaintext else [])]

    @property
    def name(self) -> str:
        """The broker's name: its state folder's and its container's (mosquitto, mosquitto-2, ...)."""
        return "mosquitto" if self.number == 1 else f"mosquitto-{self.number}"


@dataclass(frozen=True)
class RedisNode:
    number: int
    port: int
    bus_port: int


@dataclass(frozen=True)
class Instance:
    number: int
    grpc_port: int
    metrics_port: int


def load(topology: str | None = None) -> StackSettings:
    """The settings of the environment; `topology` overrides METRICS_TOPOLOGY."""
    loaded = settings.load(StackSettings, "stack")
    if topology is not None:
        loaded = replace(loaded, topology=topology)
    if loaded.topology not in TOPOLOGIES:
        raise settings.SettingsError(
            f"METRICS_TOPOLOGY: {loaded.topology!r} is not one of {', '.join(TOPOLOGIES)}"
        )
    if loaded.cluster and loaded.state_dir == StackSettings.state_dir:
        loaded = replace(loaded, state_dir=ROOT / ".stack-cluster")
    return loaded
