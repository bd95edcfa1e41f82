"""Devices over MQTT under faults, for the fault tests of either topology (test_mqtt.py,
test_cluster.py).

Each device publishes a new value per message (1, 2, 3, ...) on the plaintext port as fast as its
PUBACKs come, and the fleet keeps what each broker acknowledged. Given several brokers, every device
is given them all and starts at its own (device i at broker i mod n); when its connection breaks it
moves to the next and sends again, once connected, what had no PUBACK (as paho devices do).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence

import asyncpg

from testkit.mqtt import SUCCESS, Device
from tests.helpers import eventually

TOPIC = "metrics/v1/{}"
# A device's own time for its n-th reading (own_time): epoch milliseconds, one apart.
OWN_TIME_MS = 1_796_000_000_000


class Fleet:
    def __init__(self, name: str, count: int, ports: Sequence[int], own_time: bool = False) -> None:
        run = uuid.uuid4().hex[:8]
        self.sensors = [f"{name}-{run}-{i}" for i in range(count)]
        self.devices = [Device([*ports[i % len(ports) :], *ports[: i % len(ports)]]) for i in range(count)]
        self.own_time = own_time
        # Per sensor, each acknowledged value and the port of the broker that acknowledged it.
        self.acknowledged: dict[str, list[tuple[float, int]]] = {s: [] for s in self.sensors}
        self._stop = asyncio.Event()
        self._load: list[asyncio.Task[None]] = []

    @property
    def total(self) -> int:
        return sum(map(len, self.acknowledged.values()))

    def values(self, sensor: str, port: int | None = None) -> list[float]:
        """What the brokers (or the one at `port`) acknowledged of the sensor's readings."""
        return [value for value, by in self.acknowledged[sensor] if port is None or by == port]

    async def start(self) -> None:
        for device in self.devices:
            await device.connect()
        self._load = [
            asyncio.create_task(self._publish(d, s)) for d, s in zip(self.devices, self.sensors, strict=True)
        ]

    async def _publish(self, device: Device, sensor: str) -> None:
        value = 0
        while not self._stop.is_set():
            value += 1
            reading: dict[str, float] = {"temperature": value}
            if self.own_time:
                reading["ts"] = OWN_TIME_MS + value
            reason, port = await device.publish_to(TOPIC.format(sensor), json.dumps(reading), within_s=60)
            if reason == SUCCESS:
                self.acknowledged[sensor].append((float(value), port))

    async def acknowledged_at_least(self, count: int, what: str) -> None:
        async def so_far() -> None:
            assert self.total >= count

        await eventually(so_far, timeout=60, what=what)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._load)
        for device in self.devices:
            await device.close()


async def stored(db: asyncpg.Pool, sensor_id: str) -> list[tuple[str, float, int]]:
    """The sensor's readings in PostgreSQL: (metric type, value, reading time), in time order."""
    rows = await db.fetch(
        "SELECT metric_type, value, reading_time FROM readings WHERE sensor_id = $1 ORDER BY reading_time, metric_type",
        sensor_id,
    )
    return [(r["metric_type"], r["value"], r["reading_time"]) for r in rows]


async def each_stored_once(db: asyncpg.Pool, fleet: Fleet) -> None:
    """Every reading the brokers acknowledged is stored, once (waits for it)."""

    async def each_once() -> None:
        for sensor in fleet.sensors:
            values = [v for _, v, _ in await stored(db, sensor)]
            assert sorted(values) == sorted(fleet.values(sensor)), sensor

    await eventually(each_once, timeout=60, what="every acknowledged reading stored once")


LAST = -1.0  # the value of after_a_last_reading's readings


async def after_a_last_reading(db: asyncpg.Pool, fleet: Fleet, port: int) -> dict[str, list[float]]:
    """Publishes a last reading (LAST) of each sensor through the broker at `port`, after everything
    the devices sent, and waits until they are stored: a broker hands the bridges what it holds in
    the order it took it, so the rest is stored by then. Returns each sensor's other stored values."""
    last = Device(port)
    await last.connect()
    for sensor in fleet.sensors:
        assert await last.publish(TOPIC.format(sensor), json.dumps({"temperature": LAST})) == SUCCESS
    await last.close()

    async def lasts_stored() -> None:
        for sensor in fleet.sensors:
            assert LAST in {v for _, v, _ in await stored(db, sensor)}, sensor

    await eventually(lasts_stored, timeout=60, what="the last readings stored")
    return {sensor: [v for _, v, _ in await stored(db, sensor) if v != LAST] for sensor in fleet.sensors}
