"""Mosquitto's dynamic-security plugin, commanded as its admin through its $CONTROL topic on a
broker's TLS listener: devices' MQTT accounts (make device-credentials, and the registry's
DevicesService.SetMqttPassword, disabling and revocation).

A device's account is a client (its username) with a role per sensor prefix: publish to
metrics/v1/<prefix> and metrics/v1/<prefix>/pb|json. The plugin disconnects a client at once when
it is disabled or deleted, and refuses it at its next connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv50

CONTROL = "$CONTROL/dynamic-security/v1"
# Devices publish here: metrics/v1/<sensor id>, and /pb or /json after it (bridge/payloads.py).
TOPIC_ROOT = "metrics/v1"
# Mosquitto 2.0 answers a command about a client it does not have so.
NO_CLIENT = "Client not found"
# A command, or its response: JSON objects.
Command = dict[str, Any]


class DynsecError(RuntimeError):
    """The broker refused a command; the message says which and why."""


@dataclass(frozen=True)
class Broker:
    """How the plugin's admin reaches a broker: its TLS listener, a context that trusts its
    certificate, the admin's account."""

    host: str
    port: int
    tls: ssl.SSLContext
    username: str
    password: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def connected(broker: Broker, within_s: float = 10) -> AsyncIterator[gmqtt.Client]:
    """A short MQTT 5 session as the admin: connected within `within_s`, closed after (or if it
    fails), nothing left open."""
    client = gmqtt.Client(f"dynsec-{uuid.uuid4().hex[:12]}", session_expiry_interval=0)
    client.set_config({"reconnect_retries": 0})  # a command fails; its caller says what then
    client.set_auth_credentials(broker.username, broker.password)
    try:
        async with asyncio.timeout(within_s):
            await client.connect(broker.host, broker.port, ssl=broker.tls, version=MQTTv50)
        yield client
        await client.disconnect()
    finally:
        connection = client._connection
        if connection is not None and not connection.is_closing():
            with contextlib.suppress(Exception):
                await connection.close()


async def control(broker: Broker, commands: list[Command], within_s: float = 10) -> list[Command]:
    """Sends commands; returns the responses (each with an "error" when it failed). Raises
    OSError or TimeoutError when the broker does not answer."""
    answered: asyncio.Future[list[Command]] = asyncio.get_running_loop().create_future()

    def on_message(client: gmqtt.Client, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        if not answered.done():
            answered.set_result(json.loads(payload)["responses"])
        return 0

    subscribed = asyncio.Event()
    async with connected(broker, within_s) as client:
        client.on_message = on_message
        client.on_subscribe = lambda *_: subscribed.set()
        client.subscribe(f"{CONTROL}/response", qos=1)
        async with asyncio.timeout(within_s):
            await subscribed.wait()  # in place before the commands' answer
            client.publish(CONTROL, json.dumps({"commands": commands}), qos=1)
            return await answered


def role_of(prefix: str) -> str:
    return f"sensors:{prefix}"


def _failed(responses: list[Command], allowed: tuple[str, ...] = ()) -> None:
    failed = [r for r in responses if r.get("error") and not any(a in r["error"] for a in allowed)]
    if failed:
        raise DynsecError("; ".join(f"{r['command']}: {r['error']}" for r in failed))


async def set_password(
    broker: Broker, username: str, prefix: str, password: str, enabled: bool = True
) -> None:
    """Makes (or renews) a device's account: publish under `prefix` only, with this password (the
    old one no longer works); disabled unless `enabled`."""
    role = await _role(broker, prefix)
    made = await control(broker, [
        {"command": "createClient", "username": username, "password": password,
         "roles": [{"rolename": role}], **({} if enabled else {"disabled": True})},
    ])  # fmt: skip
    _failed(made, ("already exists",))
    if made[0].get("error"):
        (found,) = await control(broker, [{"command": "getClient", "username": username}])
        _failed([found])
        _failed(await control(broker, [
            {"command": "setClientPassword", "username": username, "password": password},
            *_role_changes(found, username, role),
        ]))  # fmt: skip
        await set_enabled(broker, username, enabled)


async def set_enabled(broker: Broker, username: str, enabled: bool) -> None:
    """Enables or disables an account (a disabled one is disconnected at once); nothing for one the
    broker does not have."""
    command = "enableClient" if enabled else "disableClient"
    _failed(await control(broker, [{"command": command, "username": username}]), (NO_CLIENT,))


async def delete(broker: Broker, username: str) -> None:
    """Deletes an account (disconnected at once); nothing for one the broker does not have."""
    _failed(await control(broker, [{"command": "deleteClient", "username": username}]), (NO_CLIENT,))


async def set_role(broker: Broker, username: str, prefix: str) -> None:
    """Lets an account publish under `prefix` only (its sensors changed); nothing for one the broker
    does not have."""
    role = await _role(broker, prefix)
    (found,) = await control(broker, [{"command": "getClient", "username": username}])
    if found.get("error") == NO_CLIENT:
        return
    _failed([found])
    if changes := _role_changes(found, username, role):
        _failed(await control(broker, changes))


async def _role(broker: Broker, prefix: str) -> str:
    """The role of the sensors under `prefix` (made if the broker has none): its name."""
    role = role_of(prefix)
    acl = [{"command": "addRoleACL", "rolename": role, "acltype": "publishClientSend", "topic": topic,
            "allow": True} for topic in (f"{TOPIC_ROOT}/{prefix}", f"{TOPIC_ROOT}/{prefix}/+")]  # fmt: skip
    _failed(await control(broker, [{"command": "createRole", "rolename": role}, *acl]), ("already exists",))
    return role


def _role_changes(found: Command, username: str, role: str) -> list[Command]:
    """What gives a client (as getClient found it) the role of its sensors and no other's."""
    has = {r["rolename"] for r in found.get("data", {}).get("client", {}).get("roles", [])}
    # Mosquitto 2.0 answers "Internal error" to adding a role the client has: only what it lacks.
    add = [{"command": "addClientRole", "username": username, "rolename": role}] if role not in has else []
    return add + [{"command": "removeClientRole", "username": username, "rolename": r}
                  for r in sorted(has - {role}) if r.startswith("sensors:")]  # fmt: skip
