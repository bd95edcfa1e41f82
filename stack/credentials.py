"""The accounts of the servers and their passwords: one file per account in a folder only its owner reads.

The local stack generates them once into <state_dir>/secrets; the services read theirs through
`..._PASSWORD_FILE` settings pointing into that folder (never a password in an environment variable
or on a command line, where `ps` shows it), and the stack's tools, the benchmark and the tests read
them from here. docker-compose.yml takes the same files as Docker secrets: `python3 -m stack.credentials
deploy/compose/secrets` generates them (standard library only, no environment needed).
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TypeVar


@dataclass(frozen=True)
class Account:
    server: str  # postgres, redis, kafka
    user: str

    @property
    def file_name(self) -> str:
        return f"{self.server}-{self.user}"


# PostgreSQL: the owner of the schema (every service's migrations run as it), and one role per service
# that uses the database, which may use only its own tables and what other owners grant it
# (runtime/migrations.py): the saver's writer, the assessor's reader, the processor's, the notifier's,
# the registry's.
# The superuser's is for docker-compose.yml's image (the local stack's superuser logs in by peer only).
POSTGRES_SUPERUSER = Account("postgres", "postgres")
POSTGRES_OWNER = Account("postgres", "metrics")
POSTGRES_WRITER = Account("postgres", "metrics_writer")
POSTGRES_READER = Account("postgres", "metrics_reader")
POSTGRES_PROCESSOR = Account("postgres", "metrics_processor")
POSTGRES_NOTIFIER = Account("postgres", "metrics_notifier")
POSTGRES_REGISTRY = Account("postgres", "metrics_registry")
# The exporters' (Prometheus): statistics only (pg_monitor; Redis INFO and the like).
POSTGRES_MONITOR = Account("postgres", "metrics_monitor")
# docker-compose.yml's cluster profile: its streaming replica's login (replication only).
POSTGRES_REPLICATOR = Account("postgres", "replicator")
REDIS_MONITOR = Account("redis", "monitor")
# Redis: operators, tools and tests; the processor (its counters only).
REDIS_ADMIN = Account("redis", "admin")
REDIS_PROCESSOR = Account("redis", "processor")
# Kafka: the super user of tools and tests (and of the broker itself); one principal per service.
KAFKA_ADMIN = Account("kafka", "admin")
KAFKA_RECEIVER = Account("kafka", "receiver")
KAFKA_PROCESSOR = Account("kafka", "processor")
KAFKA_SAVER = Account("kafka", "saver")
KAFKA_NOTIFIER = Account("kafka", "notifier")
KAFKA_ASSESSOR = Account("kafka", "assessor")
KAFKA_BRIDGE = Account("kafka", "bridge")
KAFKA_REGISTRY = Account("kafka", "registry")
KAFKA_ACCOUNTS = (
    KAFKA_ADMIN, KAFKA_RECEIVER, KAFKA_PROCESSOR, KAFKA_SAVER, KAFKA_NOTIFIER, KAFKA_ASSESSOR, KAFKA_BRIDGE,
    KAFKA_REGISTRY,
)  # fmt: skip
# MQTT (Mosquitto): the dynamic-security plugin's admin (devices' accounts are made with it: make
# device-credentials), and the bridges' (the services' listener).
MQTT_ADMIN = Account("mqtt", "admin")
MQTT_BRIDGE = Account("mqtt", "bridge")
MQTT_ACCOUNTS = (MQTT_ADMIN, MQTT_BRIDGE)
POSTGRES_ACCOUNTS = (
    POSTGRES_SUPERUSER, POSTGRES_OWNER, POSTGRES_WRITER, POSTGRES_READER, POSTGRES_PROCESSOR,
    POSTGRES_NOTIFIER, POSTGRES_REGISTRY, POSTGRES_MONITOR, POSTGRES_REPLICATOR,
)  # fmt: skip
REDIS_ACCOUNTS = (REDIS_ADMIN, REDIS_PROCESSOR, REDIS_MONITOR)
ACCOUNTS = (*POSTGRES_ACCOUNTS, *REDIS_ACCOUNTS, *KAFKA_ACCOUNTS, *MQTT_ACCOUNTS)


class MissingCredentials(RuntimeError):
    """A password file is missing; the message names it."""


def ensure(folder: Path, file_mode: int = 0o600) -> None:
    """Creates the folder (0700) and a random password (`file_mode`) for each account that has none yet."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    for account in ACCOUNTS:
        path = password_file(folder, account)
        if path.exists():
            continue
        # O_EXCL: two `make run` at once must not overwrite each other's passwords.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")


# A folder on this machine (Path), or in a container (PurePosixPath: /run/secrets).
Folder = TypeVar("Folder", bound=PurePath)


def password_file(folder: Folder, account: Account) -> Folder:
    return folder / account.file_name


def password(folder: Path, account: Account) -> str:
    path = password_file(folder, account)
    try:
        return path.read_text().removesuffix("\n")
    except FileNotFoundError:
        raise MissingCredentials(
            f"no password file {path} for {account.server} user {account.user}: `make run` creates "
            "the local stack's; for another deployment, point its credentials at the folder holding them"
        ) from None


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 -m stack.credentials FOLDER  (creates the missing password files)")
    # For Docker secrets: Compose mounts each file with its own mode, and the containers' users
    # (postgres, redis, the services' 10001) are not the host's. The folder (0700) keeps them private.
    ensure(Path(sys.argv[1]), file_mode=0o644)
    print(f"passwords in {sys.argv[1]}: {', '.join(a.file_name for a in ACCOUNTS)}")
