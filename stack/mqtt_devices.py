"""make device-credentials ARGS="--sensors plant-7- [--device plant-7-gateway]": an account at the MQTT
broker for a device, which may publish under its sensors only, and what the device needs to connect.

The account is made in each broker's dynamic-security plugin (the cluster topology's two brokers
each keep their own), through its $CONTROL topic, as its admin: a role per sensor prefix (publish
to metrics/v1/<prefix> and metrics/v1/<prefix>/pb|json), and a client with a new password (for an
existing device: a new password, the old one no longer works). The password is shown once; the
brokers keep only its hash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gmqtt

from runtime.validation import SENSOR_ID
from stack import access, certs, credentials
from stack.mosquitto import TOPIC_ROOT, connected
from stack.settings import StackSettings
from stack.supervisor import in_use

CONTROL = "$CONTROL/dynamic-security/v1"


class DynsecError(RuntimeError):
    """The broker refused a command; the message says which and why."""


@dataclass(frozen=True)
class Broker:
    """How the plugin's admin reaches a broker: its TLS port on this machine, the CA of its
    certificate, the admin's password."""

    tls_port: int
    ca: Path
    admin_password: str

    @classmethod
    def every(cls, settings: StackSettings) -> list[Broker]:
        """The stack's brokers."""
        ca = certs.paths(settings).ca
        if ca is None:
            raise DynsecError("the stack's TLS certificate is not its own CA's: give its CA")
        password = access.password(settings, credentials.MQTT_ADMIN)
        return [cls(b.tls_port, ca, password) for b in settings.mqtt_brokers]


async def control(broker: Broker, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sends dynamic-security commands as the plugin's admin, on the TLS port; returns the responses
    (each with an "error" when it failed)."""
    answered: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()

    def on_message(client: gmqtt.Client, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        if not answered.done():
            answered.set_result(json.loads(payload)["responses"])
        return 0

    subscribed = asyncio.Event()
    tls = ssl.create_default_context(cafile=str(broker.ca))
    async with connected(credentials.MQTT_ADMIN.user, broker.admin_password, broker.tls_port, tls) as client:
        client.on_message = on_message
        client.on_subscribe = lambda *_: subscribed.set()
        client.subscribe(f"{CONTROL}/response", qos=1)
        async with asyncio.timeout(10):
            await subscribed.wait()  # in place before the commands' answer
            client.publish(CONTROL, json.dumps({"commands": commands}), qos=1)
            return await answered


def role_of(prefix: str) -> str:
    return f"sensors:{prefix}"


async def issue(broker: Broker, device: str, prefix: str, password: str) -> None:
    """Makes (or renews) the device's account: publish under `prefix` only."""
    role = role_of(prefix)
    acl = [{"command": "addRoleACL", "rolename": role, "acltype": "publishClientSend", "topic": topic,
            "allow": True} for topic in (f"{TOPIC_ROOT}/{prefix}", f"{TOPIC_ROOT}/{prefix}/+")]  # fmt: skip
    made = await control(broker, [
        {"command": "createRole", "rolename": role}, *acl,
        {"command": "createClient", "username": device, "password": password, "roles": [{"rolename": role}]},
    ])  # fmt: skip
    failed = [r for r in made if r.get("error") and "already exists" not in r["error"]]
    if "already exists" in made[-1].get("error", ""):
        (found,) = await control(broker, [{"command": "getClient", "username": device}])
        has = {r["rolename"] for r in found.get("data", {}).get("client", {}).get("roles", [])}
        # Mosquitto 2.0 answers "Internal error" to adding a role the client has: only what it lacks.
        add = [] if role in has else [{"command": "addClientRole", "username": device, "rolename": role}]
        renewed = await control(broker, [
            {"command": "setClientPassword", "username": device, "password": password}, *add,
        ])  # fmt: skip
        failed += [r for r in [found, *renewed] if r.get("error")]
    if failed:
        raise DynsecError("; ".join(f"{r['command']}: {r['error']}" for r in failed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make device-credentials ARGS=...", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sensors", required=True, help="the sensor id, or the prefix of the sensor ids, "
                        "the device may publish (a topic level: letters, digits, . _ : -)")  # fmt: skip
    parser.add_argument("--device", help="its username at the broker (default: the sensors' id or prefix)")
    args = parser.parse_args(argv)
    device = args.device or args.sensors
    for name, value in (("--sensors", args.sensors), ("--device", device)):
        if SENSOR_ID.fullmatch(value) is None:
            parser.error(f"{name}: {value!r} is not an id (1-128 of A-Z a-z 0-9 . _ : -)")
    settings = in_use()
    password = secrets.token_urlsafe(24)
    try:
        brokers = Broker.every(settings)
    except DynsecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for broker in brokers:  # the same password at each: a device moves between them as it is
        try:
            asyncio.run(issue(broker, device, args.sensors, password))
        except (OSError, TimeoutError) as exc:
            why = exc or "no answer in time"
            print(f"error: the MQTT broker does not answer on 127.0.0.1:{broker.tls_port} ({why}): "
                  "is the stack up (make run)? Run this again once it is: the device's password is "
                  "renewed at every broker.", file=sys.stderr)  # fmt: skip
            return 1
        except DynsecError as exc:
            print(f"error: the broker on 127.0.0.1:{broker.tls_port} refused: {exc}", file=sys.stderr)
            return 1
    ca = certs.paths(settings).ca
    topic = f"{TOPIC_ROOT}/{args.sensors}"
    addresses = ", ".join(f"mqtts://127.0.0.1:{b.tls_port}" for b in brokers)
    also = "  (any of them: give the device every one)" if len(brokers) > 1 else ""
    print(f"""\
broker    {addresses}  (TLS; CA: {ca}){also}
username  {device}
password  {password}   (shown once: the broker keeps only its hash)
publishes {topic} (compact JSON), {topic}/pb, {topic}/json  (QoS 1)

mosquitto_pub -V mqttv5 -h 127.0.0.1 -p {brokers[0].tls_port} --cafile {ca} -u {device} -P '{password}' \\
  -q 1 -t {topic} -m '{{"temperature": 21.5}}'""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
