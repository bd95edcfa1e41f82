"""The registered devices as a service that checks credentials knows them: the compacted topic
"devices" (registry/), followed. A token the registry issued to a device (its `device` claim, its
`jti` the credential's id) is refused while the device is disabled or not registered, or once the
credential is revoked, within a fetch (100 ms) of the registry's change, and may write only the
device's sensors. A dictionary lookup a call: no network hop.

With METRICS_REQUIRE_REGISTERED_DEVICES on, every reading's sensor must be covered by an enabled
device (its sensorIdPrefix, or its id when it has none), whoever sends it (`require_covered`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from metrics.v1 import device_pb2
from runtime.compacted import Follower
from runtime.errors import PermissionDenied, Unauthenticated, Unavailable
from runtime.kafka import KafkaSettings

# Sensors whose devices are remembered between changes of the devices (a fleet's sensors, bounded).
MAX_VERDICTS = 1_000_000


class Coverage:
    """Which enabled devices cover each sensor, kept up to date change by change: a dictionary
    lookup per distinct prefix length, and each sensor's answer remembered until the devices change."""

    def __init__(self) -> None:
        # The enabled devices by the exact sensor id they cover (devices without a prefix) and by
        # prefix, and how many prefixes have each length.
        self._exact: dict[str, set[str]] = {}
        self._prefixes: dict[str, set[str]] = {}
        self._lengths: Counter[int] = Counter()
        self._found: dict[str, frozenset[str]] = {}
        # Goes up with every change: what was worked out from the devices is stale once it has moved.
        self.version = 0

    def covers(self, sensor_id: str) -> bool:
        return bool(self.devices_of(sensor_id))

    def devices_of(self, sensor_id: str) -> frozenset[str]:
        """The ids of the enabled devices that cover the sensor."""
        found = self._found.get(sensor_id)
        if found is None:
            if len(self._found) >= MAX_VERDICTS:
                self._found.clear()
            ids = set(self._exact.get(sensor_id, ()))
            for n in self._lengths:
                if n <= len(sensor_id):
                    ids.update(self._prefixes.get(sensor_id[:n], ()))
            found = self._found[sensor_id] = frozenset(ids)
        return found

    def changed(self, key: str, before: device_pb2.Device | None, after: device_pb2.Device | None) -> None:
        """A device's record replaced (None: absent)."""
        self._count(before, remove=True)
        self._count(after, remove=False)
        self._found.clear()
        self.version += 1

    def _count(self, device: device_pb2.Device | None, remove: bool) -> None:
        if device is None or device.state != device_pb2.DEVICE_STATE_ENABLED:
            return
        prefix = device.sensor_id_prefix
        index = self._prefixes if prefix else self._exact
        key = prefix or device.device_id
        ids = index.setdefault(key, set())
        if remove:
            ids.discard(device.device_id)
            if not ids:
                del index[key]
        else:
            ids.add(device.device_id)
        if prefix:
            self._lengths[len(prefix)] += -1 if remove else 1
            if not self._lengths[len(prefix)]:
                del self._lengths[len(prefix)]


class Devices:
    def __init__(self, settings: KafkaSettings) -> None:
        self.coverage = Coverage()
        self.follower = Follower(settings, settings.devices_topic, device_pb2.Device, self.coverage.changed)

    def require_covered(self, sensor_ids: Iterable[str], field: str = "sensor_id") -> None:
        """Raises unless an enabled registered device covers each sensor (strict mode)."""
        if not self.follower.ready:
            raise Unavailable("the registered devices are not read yet: retry in a moment")
        for sensor_id in sensor_ids:
            if not self.coverage.covers(sensor_id):
                raise PermissionDenied(
                    f"{field}: sensor {sensor_id!r} is not covered by an enabled registered device "
                    "(registered devices are required here: register one whose sensorIdPrefix covers it)"
                )

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
