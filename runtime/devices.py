"""The registered devices as a service that checks credentials knows them: the compacted topic
"devices" (registry/), followed. A token the registry issued to a device (its `device` claim, its
`jti` the credential's id) is refused while the device is disabled or not registered, or once the
credential is revoked, within a fetch (100 ms) of the registry's change, and may write only the
device's sensors. A dictionary lookup a call: no network hop."""

from __future__ import annotations

from collections.abc import Iterable

from metrics.v1 import device_pb2
from runtime.compacted import Follower
from runtime.errors import PermissionDenied, Unauthenticated, Unavailable
from runtime.kafka import KafkaSettings


class Devices:
    def __init__(self, settings: KafkaSettings) -> None:
        self.follower = Follower(settings, settings.devices_topic, device_pb2.Device)

    def check(
        self, device_id: str, credential_id: str, sensor_ids: Iterable[str], field: str = "sensor_id"
    ) -> None:
        """Raises unless the device may send now with this credential (a token's jti), for these sensors."""
        if not self.follower.ready:
            raise Unavailable("the registered devices are not read yet: retry in a moment")
        device = self.follower.held.get(device_id)
        if device is None:
            raise Unauthenticated(f"device {device_id!r} is not registered: its credentials are refused")
        if device.state == device_pb2.DEVICE_STATE_DISABLED:
            raise Unauthenticated(f"device {device_id!r} is disabled: its credentials are refused")
        if not any(c.credential_id == credential_id for c in device.credentials):
            raise Unauthenticated(
                f"credential {credential_id!r} of device {device_id!r} is revoked or expired"
            )
        prefix = device.sensor_id_prefix
        for sensor_id in sensor_ids:  # a batch's few sensors; any one outside is named
            if not (sensor_id.startswith(prefix) if prefix else sensor_id == device_id):
                covers = (
                    f"sensor ids starting with {prefix!r}" if prefix else f"only the sensor {device_id!r}"
                )
                raise PermissionDenied(
                    f"{field}: device {device_id!r} may not write sensor {sensor_id!r} (it writes {covers})"
                )
