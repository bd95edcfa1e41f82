"""Each service's settings as environment variables, for any deployment of the stack: the local
stack's processes (stack/parts.py, at 127.0.0.1 and their ports) and docker-compose.yml's containers
(stack/compose.py, at the Compose network's names). A setting added here reaches both."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from stack import certs, credentials
from stack.credentials import Account
from stack.redis_cluster import REPLICAS_PER_MASTER
from stack.settings import Instance, StackSettings, postgres_dsn, redis_url


@dataclass(frozen=True)
class Deployment:
    """What a deployment gives its services: where the servers are (host:port), the folder holding
    the password files, and where webhooks may go besides public addresses."""

    kafka: str  # the bootstrap servers, host:port,...
    redis: str  # one node of a Redis Cluster
    postgres: str  # the primary
    secrets: PurePath
    webhook_networks: tuple[str, ...]
    mqtt: str  # the MQTT brokers' listeners for the services, host:port,...
    # Where the MQTT bridges keep their arrival stamps (bridge/stamps.py), one file each.
    bridge_state: PurePath
    # How many MQTT bridges share the subscription (and the microseconds of arrival times).
    bridges: int
    # The cluster topology's: the assessors' streaming replica and a Redis Cluster.
    postgres_replica: str | None = None
    redis_cluster: bool = False
    # The folder of the keys that sign tokens, which the registry issues devices' tokens with; None:
    # the registry issues none.
    token_keys: PurePath | None = None
    # The CA's certificate and key (PEM files) that sign devices' client certificates, which the
    # registry issues (IssueCertificate); None: the registry issues none.
    device_ca: tuple[PurePath, PurePath] | None = None
    # The MQTT brokers' TLS listeners (host:port,...), where the registry keeps the devices' accounts
    # (their certificates checked against device_ca's); "": the registry keeps none.
    mqtt_tls: str = ""


LOCAL = "127.0.0.1"


def local(settings: StackSettings) -> Deployment:
    """The local stack's: every server on this machine's loopback."""
    return Deployment(
        kafka=settings.kafka_bootstrap,
        redis=f"{LOCAL}:{settings.redis_port}",
        postgres=f"{LOCAL}:{settings.postgres_port}",
        secrets=settings.secrets_dir,
        webhook_networks=settings.notifier_allowed_networks,
        mqtt=",".join(f"{LOCAL}:{b.internal_port}" for b in settings.mqtt_brokers),
        bridge_state=settings.state_dir / "bridge",
        bridges=len(settings.instances("bridge")),
        postgres_replica=f"{LOCAL}:{settings.postgres_replica_port}" if settings.cluster else None,
        redis_cluster=settings.cluster,
        token_keys=settings.state_dir / "jwt" / "keys",
        # The local CA, which Envoy trusts for devices' certificates; none with a certificate of one's own.
        device_ca=(ca, certs.ca_key_file(ca)) if (ca := certs.paths(settings).ca) is not None else None,
        mqtt_tls=",".join(f"{LOCAL}:{b.tls_port}" for b in settings.mqtt_brokers),
    )


def device_ca(certificate: PurePath, key: PurePath) -> dict[str, str]:
    return {
        "METRICS_REGISTRY_CA_CERTIFICATE_FILE": str(certificate),
        "METRICS_REGISTRY_CA_PRIVATE_KEY_FILE": str(key),
    }


def service_env(name: str, deployment: Deployment, instance: Instance) -> dict[str, str]:
    """The environment of one instance of service `name`: each service gets the addresses it uses and
    logs in as itself; passwords travel as file names. Those that own tables apply their migrations
    as the schema's owner (runtime/migrations.py)."""

    def password_file(account: Account) -> str:
        return str(credentials.password_file(deployment.secrets, account))

    def kafka(account: Account) -> dict[str, str]:
        return {
            "METRICS_KAFKA_BOOTSTRAP_SERVERS": deployment.kafka,
            "METRICS_KAFKA_USERNAME": account.user,
            "METRICS_KAFKA_PASSWORD_FILE": password_file(account),
        }

    def postgres(account: Account, setting: str = "POSTGRES", address: str | None = None) -> dict[str, str]:
        return {
            f"METRICS_{setting}_DSN": postgres_dsn(account.user, address or deployment.postgres),
            f"METRICS_{setting}_PASSWORD_FILE": password_file(account),
        }

    replica = deployment.postgres_replica
    bridges = deployment.bridges
    service_settings = {
        "receiver": kafka(credentials.KAFKA_RECEIVER),
        "processor": {
            **kafka(credentials.KAFKA_PROCESSOR),
            "METRICS_REDIS_URL": redis_url(credentials.REDIS_PROCESSOR.user, deployment.redis),
            "METRICS_REDIS_PASSWORD_FILE": password_file(credentials.REDIS_PROCESSOR),
            # Its control plane's tables (the rules, the acts on alarms), made by its migrations.
            **postgres(credentials.POSTGRES_PROCESSOR),
            **postgres(credentials.POSTGRES_OWNER, "MIGRATIONS"),
            # On the Redis Cluster, a round is committed once a replica has its writes.
            **(
                {"METRICS_PROCESSOR_REDIS_CLUSTER": "true",
                 "METRICS_PROCESSOR_REDIS_REPLICAS": str(REPLICAS_PER_MASTER)}
                if deployment.redis_cluster else {}
            ),
        },
        "saver": {
            **kafka(credentials.KAFKA_SAVER),
            **postgres(credentials.POSTGRES_WRITER),
            **postgres(credentials.POSTGRES_OWNER, "MIGRATIONS"),
        },
        "assessor": {
            **kafka(credentials.KAFKA_ASSESSOR),
            **postgres(credentials.POSTGRES_READER),
            # Queries go to the streaming replica while it is up and close behind.
            **(postgres(credentials.POSTGRES_READER, "ASSESSOR_REPLICA", replica) if replica else {}),
        },
        "notifier": {
            **kafka(credentials.KAFKA_NOTIFIER),
            **postgres(credentials.POSTGRES_NOTIFIER),
            **postgres(credentials.POSTGRES_OWNER, "MIGRATIONS"),
            "METRICS_NOTIFIER_ALLOWED_NETWORKS": ",".join(deployment.webhook_networks),
        },
        "registry": {
            **kafka(credentials.KAFKA_REGISTRY),
            **postgres(credentials.POSTGRES_REGISTRY),
            **postgres(credentials.POSTGRES_OWNER, "MIGRATIONS"),
            # The keys that sign tokens, to issue devices theirs (IssueToken).
            **({"METRICS_REGISTRY_TOKEN_KEYS_DIR": str(keys)} if (keys := deployment.token_keys) else {}),
            # The CA that signs devices' certificates (IssueCertificate).
            **(device_ca(*ca) if (ca := deployment.device_ca) else {}),
            # The brokers' admin, to keep the devices' MQTT accounts (SetMqttPassword, disabling).
            **({"METRICS_REGISTRY_MQTT_BROKERS": deployment.mqtt_tls,
                "METRICS_REGISTRY_MQTT_USERNAME": credentials.MQTT_ADMIN.user,
                "METRICS_REGISTRY_MQTT_PASSWORD_FILE": password_file(credentials.MQTT_ADMIN)}
               if deployment.mqtt_tls else {}),
        },
        "bridge": {
            **kafka(credentials.KAFKA_BRIDGE),
            "METRICS_BRIDGE_BROKERS": deployment.mqtt,
            "METRICS_BRIDGE_MQTT_USERNAME": credentials.MQTT_BRIDGE.user,
            "METRICS_BRIDGE_MQTT_PASSWORD_FILE": password_file(credentials.MQTT_BRIDGE),
            # Its session at the brokers (the messages they keep for it while it is away) and its
            # arrival stamps are its own: one name per instance.
            "METRICS_BRIDGE_CLIENT_ID": f"bridge-{instance.number}",
            "METRICS_BRIDGE_ARRIVAL_SLOT": str(instance.number - 1),
            "METRICS_BRIDGE_ARRIVAL_SLOTS": str(bridges),
            "METRICS_BRIDGE_STATE_DIR": str(deployment.bridge_state),
        },
    }  # fmt: skip
    return {
        **service_settings[name],
        "PYTHONUNBUFFERED": "1",
        # glibc gives each thread that allocates an arena of its own (up to 8 a core); the services'
        # allocations are Python's and gRPC's, and two arenas keep the receivers' peak under overload
        # lower (test_overload: 265-289 MB over 7 runs, 260-305 without).
        "MALLOC_ARENA_MAX": "2",
        f"METRICS_{name.upper()}_GRPC_PORT": str(instance.grpc_port),
        f"METRICS_{name.upper()}_METRICS_PORT": str(instance.metrics_port),
    }
