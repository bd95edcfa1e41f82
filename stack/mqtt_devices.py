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
import secrets
import ssl
import sys

from runtime import dynsec
from runtime.dynsec import TOPIC_ROOT, Broker, DynsecError
from runtime.validation import SENSOR_ID
from stack import access, certs, credentials
from stack.settings import StackSettings
from stack.supervisor import in_use


def brokers(settings: StackSettings) -> list[Broker]:
    """The stack's brokers, as the plugin's admin reaches them: their TLS ports on this machine."""
    ca = certs.paths(settings).ca
    if ca is None:
        raise DynsecError("the stack's TLS certificate is not its own CA's: give its CA")
    password = access.password(settings, credentials.MQTT_ADMIN)
    tls = ssl.create_default_context(cafile=str(ca))
    admin = credentials.MQTT_ADMIN.user
    return [Broker("127.0.0.1", b.tls_port, tls, admin, password) for b in settings.mqtt_brokers]


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
        every = brokers(settings)
    except DynsecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for broker in every:  # the same password at each: a device moves between them as it is
        try:
            asyncio.run(dynsec.set_password(broker, device, args.sensors, password))
        except (OSError, TimeoutError) as exc:
            why = exc or "no answer in time"
            print(f"error: the MQTT broker does not answer on 127.0.0.1:{broker.port} ({why}): "
                  "is the stack up (make run)? Run this again once it is: the device's password is "
                  "renewed at every broker.", file=sys.stderr)  # fmt: skip
            return 1
        except DynsecError as exc:
            print(f"error: the broker on 127.0.0.1:{broker.port} refused: {exc}", file=sys.stderr)
            return 1
    ca = certs.paths(settings).ca
    topic = f"{TOPIC_ROOT}/{args.sensors}"
    addresses = ", ".join(f"mqtts://{b}" for b in every)
    also = "  (any of them: give the device every one)" if len(every) > 1 else ""
    print(f"""\
broker    {addresses}  (TLS; CA: {ca}){also}
username  {device}
password  {password}   (shown once: the broker keeps only its hash)
publishes {topic} (compact JSON), {topic}/pb, {topic}/json  (QoS 1)

mosquitto_pub -V mqttv5 -h 127.0.0.1 -p {every[0].port} --cafile {ca} -u {device} -P '{password}' \\
  -q 1 -t {topic} -m '{{"temperature": 21.5}}'""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
