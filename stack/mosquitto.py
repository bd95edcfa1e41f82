"""Mosquitto (Debian's `mosquitto`), the MQTT door: its configuration, rendered for a deployment, and
the files it reads (the services' passwords and ACL, the dynamic-security plugin's state).

Three listeners, each with its own rules (per_listener_settings):
- the TLS port (8883): devices, each with a username and password of its own, kept by the
  dynamic-security plugin, which lets a device publish under its own sensors only (make
  device-credentials; the plugin answers a publish elsewhere with reason code 0x87, Not authorized);
- the plaintext port (1883): this machine only, no credentials, publish to metrics/v1/# only, like
  Envoy's 8080 (METRICS_ENVOY_PLAINTEXT=off removes both);
- the services' port (1884): the bridges subscribe there with their own password (never exposed).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePath

from runtime.dynsec import TOPIC_ROOT
from stack import certs, credentials
from stack.settings import MqttBroker, StackSettings
from stack.system import say

DYNSEC_PLUGIN = PurePath("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
# The bridges' shared subscription: each message goes to one of them.
BRIDGE_GROUP = "bridges"
BRIDGE_FILTER = f"$share/{BRIDGE_GROUP}/{TOPIC_ROOT}/#"
# What the broker holds for a bridge that is away, per bridge (about 400 bytes each in its memory):
# at 20,000 messages a second, 10 seconds of them. Past it, QoS 1 messages for the bridge are dropped.
MAX_QUEUED_MESSAGES = 200_000
# How many messages the broker sends a subscriber before it has their PUBACKs (a bridge acknowledges
# each once Kafka has its readings, so this many are on their way to Kafka at once).
MAX_INFLIGHT_MESSAGES = 1_000


@dataclass(frozen=True)
class Files:
    """Where the broker finds what it reads, as its configuration names them (a path of this machine,
    or of a container)."""

    state: PurePath  # its persistence and the dynamic-security plugin's file
    certificate: PurePath
    private_key: PurePath
    services_passwords: PurePath
    services_acl: PurePath
    plaintext_acl: PurePath
    plugin: PurePath = DYNSEC_PLUGIN  # Debian's; the official image has it elsewhere

    @property
    def dynsec(self) -> PurePath:
        return self.state / "dynamic-security.json"


def files(settings: StackSettings, broker: MqttBroker) -> Files:
    """The local stack's: all in <state_dir>/mosquitto (the second broker's: mosquitto-2), owned by
    the broker's account."""
    base = settings.state_dir / broker.name
    return Files(
        state=base,
        certificate=base / "server.pem",
        private_key=base / "server-key.pem",
        services_passwords=base / "services.passwd",
        services_acl=base / "services.acl",
        plaintext_acl=base / "plaintext.acl",
    )


def render(broker: MqttBroker, plaintext: bool, where: Files, host: str = "127.0.0.1") -> str:
    """mosquitto.conf: the listeners (on `host`; the plaintext one if `plaintext`), persistence and
    limits."""
    lines = [
        "# Written by `make run` from stack/mosquitto.py: edits here are lost.",
        "per_listener_settings true",
        # The broker keeps messages for the bridges (persistent sessions) across its restarts; see
        # docs/mqtt.md for what a crash between two saves loses.
        "persistence true",
        f"persistence_location {where.state}/",
        "autosave_interval 1",
        "log_dest stderr",  # unbuffered: the stack's log has it at once
        # Also on $SYS/broker/log/<level>: the registry follows the notices of clients connecting and
        # going (Device.mqtt_connected, registry/presence.py); a line per connection in the log too.
        "log_dest topic",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        # $SYS figures (clients, messages a second) every 5 s: the bridges export them to Prometheus.
        "sys_interval 5",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        "",
        "# Devices: TLS, a username and password each (the dynamic-security plugin).",
        f"listener {broker.tls_port} {host}",
        "allow_anonymous false",
        f"certfile {where.certificate}",
        f"keyfile {where.private_key}",
        "tls_version tlsv1.2",
        f"plugin {where.plugin}",
        f"plugin_opt_config_file {where.dynsec}",
        "",
        "# The services: the bridges, with their own password.",
        f"listener {broker.internal_port} {host}",
        "allow_anonymous false",
        f"password_file {where.services_passwords}",
        f"acl_file {where.services_acl}",
    ]
    if plaintext:
        lines += [
            "",
            "# This machine only, without credentials: publish readings, nothing else.",
            f"listener {broker.port} {host}",
            "allow_anonymous true",
            f"acl_file {where.plaintext_acl}",
        ]
    return "\n".join(lines) + "\n"


# The bridges read every device's messages (through their shared subscription) and the broker's
# $SYS figures; the plaintext port's anonymous clients only publish readings.
SERVICES_ACL = f"""\
user {credentials.MQTT_BRIDGE.user}
topic read {TOPIC_ROOT}/#
topic read $SYS/#
"""
PLAINTEXT_ACL = f"topic write {TOPIC_ROOT}/#\n"


def prepare(settings: StackSettings, broker: MqttBroker, user: str | None) -> None:
    """Writes the broker's files (its configuration each time; the plugin's state once) for it to
    run as `user`."""
    where = files(settings, broker)
    base = Path(where.state)
    base.mkdir(parents=True, exist_ok=True)
    _own(base, user)
    tls = certs.paths(settings)
    for source, target in ((tls.certificate, where.certificate), (tls.private_key, where.private_key)):
        shutil.copyfile(source, target)
        _private(Path(target), user)
    Path(where.services_acl).write_text(SERVICES_ACL)
    Path(where.plaintext_acl).write_text(PLAINTEXT_ACL)
    _services_passwords(settings, Path(where.services_passwords))
    for path in (where.services_acl, where.plaintext_acl, where.services_passwords):
        _private(Path(path), user)
    if not Path(where.dynsec).exists():
        _dynsec_init(settings, Path(where.dynsec))
        _private(Path(where.dynsec), user)
    conf_path(settings, broker).write_text(render(broker, settings.envoy_plaintext, where))


def conf_path(settings: StackSettings, broker: MqttBroker) -> Path:
    return Path(files(settings, broker).state) / "mosquitto.conf"


def _services_passwords(settings: StackSettings, path: Path) -> None:
    """The bridges' account in mosquitto_passwd's format: no password in clear on disk. Kept as it
    is while it holds the password (a new salt would be a new file, and a restart of the broker)."""
    bridge = credentials.MQTT_BRIDGE
    password = credentials.password(settings.secrets_dir, bridge)
    if path.exists() and _holds(path.read_text(), bridge.user, password):
        return
    salt, digest = password_hash(password)
    path.write_text(f"{bridge.user}:$7${PBKDF2_ROUNDS}${salt}${digest}\n")


def _holds(text: str, user: str, password: str) -> bool:
    """Whether a password file's line of `user` is the hash of `password`."""
    for line in text.splitlines():
        name, _, hashed = line.partition(":")
        parts = hashed.split("$")  # "", "7", rounds, salt, hash
        if name == user and len(parts) == 5 and parts[1] == "7":
            digest = hashlib.pbkdf2_hmac(
                "sha512", password.encode(), base64.b64decode(parts[3]), int(parts[2])
            )
            return base64.b64encode(digest).decode() == parts[4]
    return False


def _dynsec_init(settings: StackSettings, path: Path) -> None:
    """The plugin's first state, as `mosquitto_ctrl dynsec init` writes it: its admin (who may change
    it, through $CONTROL/dynamic-security) and nobody else; publishing is denied unless a role
    allows it."""
    say("Creating the MQTT broker's device registry (dynamic security)")
    admin = credentials.MQTT_ADMIN
    salt, digest = password_hash(credentials.password(settings.secrets_dir, admin))
    control = "$CONTROL/dynamic-security/#"
    every = [("publishClientSend", control), ("publishClientReceive", control), ("subscribePattern", control),
             ("publishClientReceive", "$SYS/#"), ("subscribePattern", "$SYS/#")]  # fmt: skip
    state = {
        "clients": [{"username": admin.user, "password": digest, "salt": salt, "iterations": PBKDF2_ROUNDS,
                     "roles": [{"rolename": admin.user}]}],
        "roles": [{"rolename": admin.user,
                   "acls": [{"acltype": kind, "topic": topic, "allow": True} for kind, topic in every]}],
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": True, "subscribe": False,
                             "unsubscribe": True},
    }  # fmt: skip
    path.write_text(json.dumps(state, indent=2) + "\n")


# Mosquitto's password hashes (its password files and the dynamic-security plugin alike):
# PBKDF2-HMAC-SHA512, 101 rounds, a 12-byte salt, both base64.
PBKDF2_ROUNDS = 101


def password_hash(password: str) -> tuple[str, str]:
    """(salt, hash) of a password, base64, as Mosquitto checks it."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ROUNDS)
    return base64.b64encode(salt).decode(), base64.b64encode(digest).decode()


def _private(path: Path, user: str | None) -> None:
    path.chmod(0o600)
    _own(path, user)


def _own(path: Path, user: str | None) -> None:
    if user is not None:
        shutil.chown(path, user, user)
