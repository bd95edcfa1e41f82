"""Devices over MQTT: Mosquitto at the door, the bridge into Kafka, the pipeline behind as for every
other door. Real clients: paho-mqtt (testkit/mqtt.py) and mosquitto_pub."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from runtime import dynsec
from stack import credentials as stack_credentials
from testkit.mqtt import NOT_AUTHORIZED, SUCCESS, Device, Refused
from testkit.reported import scrape
from tests.faults import healthy, pid_of
from tests.helpers import end_offsets, eventually, past_us, read_topic, rfc3339
from tests.mqtt_fleet import TOPIC, Fleet, after_a_last_reading, each_stored_once, stored
from tests.target import ROOT, Target

Issue = Callable[[str], Awaitable[tuple[str, str]]]


@pytest.fixture
def ca(target: Target) -> Path:
    """The CA of the broker's TLS certificate (the front door's)."""
    return ROOT / target.tls_ca_file


@pytest.fixture
def credentials_for(target: Target, ca: Path) -> Issue:
    """An account at the broker for a device whose sensors start with the prefix given: (username,
    password), as make device-credentials makes it."""

    async def make(prefix: str) -> tuple[str, str]:
        password = secrets.token_urlsafe(18)
        admin = target.password(stack_credentials.MQTT_ADMIN)
        tls = ssl.create_default_context(cafile=str(ca))
        broker = dynsec.Broker(
            "127.0.0.1", target.mqtt_tls_port, tls, stack_credentials.MQTT_ADMIN.user, admin
        )
        await dynsec.set_password(broker, prefix, prefix, password)
        return prefix, password

    return make


@pytest.fixture
async def device(target: Target, ca: Path, credentials_for: Issue, sensor_id: str) -> AsyncIterator[Device]:
    """A device of the test's sensor, connected on the TLS port with its own account."""
    username, password = await credentials_for(sensor_id)
    connected = Device(target.mqtt_tls_port, username, password, ca)
    await connected.connect()
    yield connected
    await connected.close()


async def test_a_device_publishes_readings_in_every_form_and_they_are_stored(
    device: Device, db: asyncpg.Pool, sensor_id: str
) -> None:
    stamped = past_us(22)
    batch = {"metrics": [{"sensorId": f"{sensor_id}", "metricType": "pressure", "value": 3,
                          "readingTime": rfc3339(stamped / 1e6 + 1)}]}  # fmt: skip
    assert await device.publish(TOPIC.format(sensor_id), b'{"temperature": 21.5, "humidity": 40}') == SUCCESS
    assert (
        await device.publish(
            TOPIC.format(sensor_id), json.dumps({"vibration": 2, "ts": stamped // 1000}).encode()
        )
        == SUCCESS
    )
    assert await device.publish(TOPIC.format(sensor_id) + "/json", json.dumps(batch)) == SUCCESS

    async def all_stored() -> list[tuple[str, float, int]]:
        rows = await stored(db, sensor_id)
        assert sorted((t, v) for t, v, _ in rows) == [
            ("humidity", 40.0), ("pressure", 3.0), ("temperature", 21.5), ("vibration", 2.0)
        ]  # fmt: skip
        return rows

    rows = {t: time for t, _, time in await eventually(all_stored, what="the device's readings")}
    assert rows["vibration"] == stamped and rows["pressure"] == stamped + 1_000_000
    # Stamped on arrival, one message's readings a microsecond apart: never the same time.
    assert abs(rows["temperature"] - time.time() * 1e6) < 60e6
    assert abs(rows["temperature"] - rows["humidity"]) == 1


async def test_the_tls_port_wants_an_account_and_its_password(
    target: Target, ca: Path, credentials_for: Issue
) -> None:
    username, password = await credentials_for(f"auth-{uuid.uuid4().hex[:8]}")
    for who, secret in ((None, None), (username, "wrong"), ("nobody", password)):
        with pytest.raises(Refused, match=r"Not authorized|Bad user name or password"):
            await Device(target.mqtt_tls_port, who, secret, ca).connect()

    # mosquitto_pub, as an operator would try it: refused too, saying why; then let in.
    async def mosquitto_pub(secret: str) -> subprocess.CompletedProcess[str]:
        command = ["mosquitto_pub", "-V", "mqttv5", "-h", "127.0.0.1", "-p", str(target.mqtt_tls_port),
                   "--cafile", str(ca), "-u", username, "-P", secret, "-q", "1", "-t", TOPIC.format(username),
                   "-m", '{"temperature": 1}']  # fmt: skip
        return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=30)

    refused = await mosquitto_pub("wrong")
    assert refused.returncode != 0 and "Not authorized" in refused.stderr + refused.stdout, refused
    ok = await mosquitto_pub(password)
    assert ok.returncode == 0, ok


async def test_credentials_made_again_renew_the_password_and_the_old_one_is_refused(
    target: Target, ca: Path, credentials_for: Issue
) -> None:
    username, first = await credentials_for(f"renew-{uuid.uuid4().hex[:8]}")
    again, second = await credentials_for(username)
    assert again == username and second != first
    with pytest.raises(Refused, match=r"Bad user name or password|Not authorized"):
        await Device(target.mqtt_tls_port, username, first, ca).connect()
    renewed = Device(target.mqtt_tls_port, username, second, ca)
    await renewed.connect()
    assert await renewed.publish(TOPIC.format(username), b'{"temperature": 1}') == SUCCESS
    await renewed.close()


async def test_a_device_may_publish_under_its_own_sensors_only(
    device: Device, db: asyncpg.Pool, sensor_id: str
) -> None:
    foreign = f"{sensor_id}x"[::-1]  # another sensor, not under this device's
    assert await device.publish(TOPIC.format(foreign), b'{"temperature": 99}') == NOT_AUTHORIZED
    assert await device.publish(TOPIC.format(sensor_id), b'{"temperature": 1}') == SUCCESS

    async def own_stored() -> None:
        assert [(t, v) for t, v, _ in await stored(db, sensor_id)] == [("temperature", 1.0)]

    # The device's own reading, published after the refused one, is stored: the refused one never will be.
    await eventually(own_stored, what="the device's own reading")
    assert await stored(db, foreign) == []


async def test_a_resent_reading_with_its_own_time_is_stored_and_counted_once(
    device: Device, db: asyncpg.Pool, redis_client: aioredis.Redis, sensor_id: str
) -> None:
    # Three warnings (>= 95) with the device's times, each sent twice: one event, a counter of 3.
    times = [1_796_378_400_000 + i for i in range(3)]
    for ms in times:
        for _ in range(2):
            payload = json.dumps({"temperature": 99, "ts": ms})
            assert await device.publish(TOPIC.format(sensor_id), payload) == SUCCESS

    async def once() -> None:
        assert [v for _, v, _ in await stored(db, sensor_id)] == [99.0, 99.0, 99.0]
        events = await db.fetch("SELECT value FROM events WHERE sensor_id = $1", sensor_id)
        assert [e["value"] for e in events] == [99.0]

    await eventually(once, what="three readings and one event")
    assert await redis_client.hget(f"warnings:{{{sensor_id}}}", "temperature") == b"3"


async def test_a_bad_payload_is_dead_lettered_and_the_next_message_flows(
    target: Target, device: Device, db: asyncpg.Pool, sensor_id: str
) -> None:
    start = await end_offsets(target.kafka_bootstrap_servers, target.dead_letter_topic)
    assert await device.publish(TOPIC.format(sensor_id), b'{"temperature": "hot"}') == SUCCESS
    assert await device.publish(TOPIC.format(sensor_id), b'{"temperature": 20}') == SUCCESS

    async def dead_lettered() -> None:
        records = await read_topic(target.kafka_bootstrap_servers, target.dead_letter_topic, start)
        mine = [dict(r.headers) for r in records if r.value == b'{"temperature": "hot"}']
        assert len(mine) == 1
        assert mine[0]["dead-letter-reason"] == b"payload.temperature: 'hot' is not a number"
        assert mine[0]["dead-letter-source"].decode().endswith(f"/metrics/v1/{sensor_id}")

    await eventually(dead_lettered, what="the bad payload's dead letter")

    async def flows() -> None:
        assert [(t, v) for t, v, _ in await stored(db, sensor_id)] == [("temperature", 20.0)]

    await eventually(flows, what="the next message stored")


@pytest.mark.local_stack
async def test_a_bridge_killed_under_load_loses_and_doubles_nothing(target: Target, db: asyncpg.Pool) -> None:
    # 20 devices publish readings without a time (stamped on arrival); the bridge is killed with -9
    # in the middle and the supervisor starts it again. Every reading the broker acknowledged is
    # stored, once.
    fleet = Fleet("mqtt-kill", 20, [target.mqtt_port])
    await fleet.start()
    try:
        await fleet.acknowledged_at_least(2_000, "the load under way")
        before = fleet.total
        os.kill(pid_of("bridge"), signal.SIGKILL)
        await eventually(lambda: healthy("bridge"), timeout=60, what="the bridge back")

        async def redelivered() -> float:
            samples = await scrape(target.metrics["bridge"])
            count = sum(v for (name, _), v in samples.items() if name == "metrics_bridge_redelivered_total")
            assert count > 0, "the broker sent the new bridge what the killed one had not acknowledged"
            return count

        redeliveries = await eventually(redelivered, what="redeliveries")
        await fleet.acknowledged_at_least(before + 2_000, "the load after the restart")
    finally:
        await fleet.stop()

    await each_stored_once(db, fleet)
    print(f"\n{fleet.total} readings acknowledged, {before} before the kill, {redeliveries:.0f} redelivered")


@pytest.mark.local_stack
async def test_a_broker_killed_under_load_is_back_and_its_loss_window_is_counted(
    target: Target, db: asyncpg.Pool
) -> None:
    # The broker is killed with -9 and the supervisor starts it again from its last save; the devices
    # connect again and go on. What the broker had acknowledged to a device but neither saved nor
    # handed to a bridge is lost: counted and printed (docs/mqtt.md states the window), and bounded
    # by a second of the load (autosave_interval 1).
    fleet = Fleet("mqtt-broker", 10, [target.mqtt_port])
    await fleet.start()
    try:
        await fleet.acknowledged_at_least(2_000, "the load under way")
        began = time.monotonic()
        before = fleet.total
        os.kill(pid_of("mosquitto"), signal.SIGKILL)
        await eventually(lambda: healthy("mosquitto"), timeout=60, what="the broker back")
        await fleet.acknowledged_at_least(before + 2_000, "the devices going on")
        load_s = time.monotonic() - began
    finally:
        await fleet.stop()
    assert all(d.connections == 2 for d in fleet.devices), "every device lost its connection and came back"
    # A last reading of each sensor, after everything the devices sent: once all are stored, so is
    # the rest (the broker hands the bridge what it holds in the order it took it, and the bridge
    # writes it so).
    values = await after_a_last_reading(db, fleet, target.mqtt_port)
    lost = 0
    for sensor in fleet.sensors:
        rows = values[sensor]
        assert len(rows) == len(set(rows)), f"{sensor}: a reading stored twice"
        lost += len(set(fleet.values(sensor)) - set(rows))
    rate = fleet.total / max(load_s, 1e-9)
    print(
        f"\n{fleet.total} readings acknowledged by the broker, {lost} of them lost with it ({rate:.0f}/s offered)"
    )
    assert lost <= rate, f"lost {lost}: more than a second of the load"
