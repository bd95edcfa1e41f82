"""First-run preparation of the stack's state: data directories, database cluster, Kafka log dir."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from stack import certs, envoy_config, tokens
from stack.settings import ROOT, StackSettings
from stack.system import SetupError, fetch_kafka_libs, say

KAFKA_DIR = ROOT / "stack" / "kafka"


@dataclass(frozen=True)
class Paths:
    """Where each part keeps its state and configuration."""

    postgres_data: Path
    redis_dir: Path
    kafka_libs: Path
    kafka_properties: Path
    envoy_yaml: Path


def paths(settings: StackSettings) -> Paths:
    state = settings.state_dir
    return Paths(
        postgres_data=state / "postgres" / "data",
        redis_dir=state / "redis",
        kafka_libs=state / "kafka" / "libs",
        kafka_properties=state / "kafka" / "server.properties",
        envoy_yaml=state / "envoy.yaml",
    )


def everything(settings: StackSettings) -> None:
    """Creates, once, what the parts need; rewrites their configuration files each time."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    where = paths(settings)
    postgres_data(where.postgres_data, settings)
    redis_dir(where.redis_dir)
    libs = fetch_kafka_libs(where.kafka_libs)
    kafka_config(where.kafka_properties, libs, settings)
    envoy_file(where.envoy_yaml, settings)


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
        initdb = [str(settings.postgres_bin / "initdb"), "-D", str(data), "-U", "postgres",
                  "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"]  # fmt: skip
        if user is not None:
            initdb = ["runuser", "-u", user, "--", *initdb]
        result = subprocess.run(initdb, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)
            raise SetupError(f"initdb failed:\n{result.stdout}{result.stderr}")


def redis_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    own(path, run_as("redis"))


def kafka_config(properties: Path, libs: Path, settings: StackSettings) -> None:
    """Writes server.properties and formats the KRaft log directory once."""
    data = properties.parent / "data"
    template = (KAFKA_DIR / "server.properties.in").read_text()
    properties.write_text(
        template.format(
            port=settings.kafka_port, controller_port=settings.kafka_controller_port, data_dir=data
        )
    )
    if not (data / "meta.properties").exists():
        say("Formatting Kafka's log directory (KRaft)")
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        command = ["java", *kafka_java_options(libs), "kafka.tools.StorageTool", "format",
                   "--cluster-id", cluster_id, "--config", str(properties)]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SetupError(f"formatting Kafka's log directory failed:\n{result.stdout}{result.stderr}")


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
                "receiver": (local, settings.receiver_grpc_port),
                "assessor": (local, settings.assessor_grpc_port),
            },
            descriptor=ROOT / "gen" / "metrics.binpb",
            certificate=tls.certificate,
            private_key=tls.private_key,
            jwks=tokens.ensure_keys(settings),
            client_ca=settings.tls_client_ca_file or tls.ca,
        )
    )
