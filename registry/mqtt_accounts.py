"""The devices' accounts at the MQTT brokers, as the registry's records say (runtime/dynsec.py).

A device with a live MQTT password (CREDENTIAL_KIND_MQTT_PASSWORD) has an account at every broker,
its username its id, publishing under its sensors only, enabled while the device is. A change of the
device is told to the brokers before the registry answers it: disabling disconnects the device at
once, and it is refused when it connects again; so do deleting the device and revoking the password
(the account is deleted). A broker that does not answer is told when it answers again (a retry every
few seconds), and at the registry's start every broker is told every account's state: what a crash
between PostgreSQL and a broker left.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

from metrics.v1 import device_pb2
from registry.settings import RegistrySettings
from runtime import dynsec
from runtime.dynsec import Broker, DynsecError
from runtime.errors import Unavailable

log = logging.getLogger(__name__)

MQTT_PASSWORD = device_pb2.CREDENTIAL_KIND_MQTT_PASSWORD
RETRY_S = 2.0
# Commands in one message to a broker when it is told every account's state.
COMMANDS_A_MESSAGE = 500
FAILURES = (OSError, TimeoutError, DynsecError)


def brokers(config: RegistrySettings) -> list[Broker]:
    """The brokers the settings name (their TLS listeners), trusted by the CA's certificate."""
    if not config.mqtt_brokers:
        return []
    tls = ssl.create_default_context(cadata=config.ca_certificate or None)
    found = []
    for address in config.mqtt_brokers:
        host, _, port = address.rpartition(":")
        found.append(Broker(host, int(port), tls, config.mqtt_username, config.mqtt_password))
    return found


def has_password(device: device_pb2.Device | None) -> bool:
    return device is not None and any(c.kind == MQTT_PASSWORD for c in device.credentials)


def sensors_of(device: device_pb2.Device) -> str:
    """The topic level the device publishes under: its prefix, or its own id."""
    return device.sensor_id_prefix or device.device_id


class MqttAccounts:
    def __init__(self, brokers: list[Broker]) -> None:
        self._brokers = brokers
        # Devices a broker has not been told of yet: told again every RETRY_S.
        self._pending: set[str] = set()

    @property
    def configured(self) -> bool:
        return bool(self._brokers)

    async def set_password(self, device: device_pb2.Device, password: str) -> None:
        """The device's account at every broker, with this password (the old one no longer works)."""
        enabled = device.state == device_pb2.DEVICE_STATE_ENABLED
        await self._each(
            lambda b: dynsec.set_password(b, device.device_id, sensors_of(device), password, enabled),
            device.device_id, "its password is not set",
        )  # fmt: skip

    async def follow(self, device_id: str, device: device_pb2.Device | None, roles: bool = False) -> None:
        """Tells every broker the device's state now (None: deleted); `roles` when its sensors changed."""
        if not self._brokers:
            return
        await self._each(lambda b: self._apply(b, device_id, device, roles), device_id,
                         "the change is stored and the broker is told when it answers again")  # fmt: skip

    async def _apply(
        self, broker: Broker, device_id: str, device: device_pb2.Device | None, roles: bool
    ) -> None:
        if not has_password(device):
            await dynsec.delete(broker, device_id)
            return
        assert device is not None
        if roles:
            await dynsec.set_role(broker, device_id, sensors_of(device))
        await dynsec.set_enabled(broker, device_id, device.state == device_pb2.DEVICE_STATE_ENABLED)

    async def _each(self, act: Callable[[Broker], Awaitable[None]], device_id: str, then: str) -> None:
        """`act` at every broker at once; Unavailable naming those that failed (the device pending)."""
        results = await asyncio.gather(*(act(b) for b in self._brokers), return_exceptions=True)
        failed = [(b, r) for b, r in zip(self._brokers, results, strict=True) if isinstance(r, BaseException)]
        for _, error in failed:
            if not isinstance(error, FAILURES):
                raise error
        if failed:
            self._pending.add(device_id)
            why = "; ".join(f"{b}: {type(e).__name__} {e}".strip() for b, e in failed)
            raise Unavailable(f"device {device_id!r}: the MQTT broker did not take it ({why}); {then}")

    async def retry(self, find: Callable[[str], Awaitable[device_pb2.Device | None]]) -> None:
        """Tells the brokers of the pending devices, until cancelled."""
        while True:
            await asyncio.sleep(RETRY_S)
            for device_id in sorted(self._pending):
                self._pending.discard(device_id)
                try:
                    await self.follow(device_id, await find(device_id), roles=True)
                except Unavailable as exc:
                    log.warning("%s", exc)
                    break  # the broker is still away: the rest wait with it

    async def reconcile(self, accounts: list[tuple[str, bool, bool]]) -> None:
        """Tells every broker every account's state ((device id, live password, enabled) each):
        enabled, disabled, or deleted."""
        commands = [
            {"command": ("enableClient" if enabled else "disableClient") if live else "deleteClient",
             "username": device_id}
            for device_id, live, enabled in accounts
        ]  # fmt: skip
        for broker in self._brokers:
            for first in range(0, len(commands), COMMANDS_A_MESSAGE):
                try:
                    responses = await dynsec.control(broker, commands[first : first + COMMANDS_A_MESSAGE])
                except FAILURES as exc:
                    log.warning("MQTT broker %s: the accounts' states not told (%s): retrying", broker, exc)
                    self._pending.update(device_id for device_id, _, _ in accounts)
                    return
                failed = [r for r in responses if r.get("error") and r["error"] != dynsec.NO_CLIENT]
                if failed:
                    log.warning("MQTT broker %s refused: %s", broker, failed[:3])
        if accounts:
            log.info("MQTT brokers told the state of %d accounts", len(accounts))
