"""Devices over MQTT, driven by fleet-load's mqtt mode (Go, paho.mqtt.golang): one reading per
PUBLISH at QoS 1 to the broker's plaintext port, the bridge taking them to Kafka, the pipeline
storing them. Every figure counts what was stored, not only what the broker acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import measure, processes
from bench.devices import Fleet
from bench.measure import Env
from stack import procfs

# The parts whose CPU a reading costs over MQTT (the load generator's is reported apart).
PARTS = ("mosquitto", "bridge", "kafka", "processor", "saver", "redis", "postgres")


async def suite(env: Env, fleet: Fleet, short: bool) -> dict[str, Any]:
    say = env.say
    broker = f"127.0.0.1:{env.stack.mqtt_port}"
    seconds = 5.0 if short else 15.0
    results: dict[str, Any] = {}
    say("devices over MQTT: one reading per PUBLISH, QoS 1 (fleet-load --mode mqtt)")

    # As fast as 1,000 devices get their PUBACKs, each with 10 messages in flight.
    began = time.monotonic()
    fast = await fleet.run(
        "mqtt-fast",
        "mqtt",
        seconds,
        target=broker,
        streams=1_000,
        window=10,
        warmup="2s",
        reading_time="server",
    )
    stored = await _stored_all(env, fleet, "mqtt-fast", fast.acked)
    # From fleet-load's start (connections and warmup included) to the last reading stored.
    results["mqtt_qos1_readings_per_s"] = stored / (time.monotonic() - began)
    results["mqtt_qos1_acked"] = fast.acked
    results["mqtt_qos1_stored"] = stored
    say(
        f"  {stored:,} readings stored of {fast.acked:,} acknowledged, "
        f"{results['mqtt_qos1_readings_per_s']:,.0f} a second end to end"
    )

    # A steady 10,000 a second: what each part spends per reading.
    rate = 10_000
    cpu_before = processes.all_parts_cpu()
    steady = await fleet.run(
        "mqtt-steady", "mqtt", seconds, target=broker, streams=1_000, rate=rate, warmup="2s",
        reading_time="server",
    )  # fmt: skip
    await _stored_all(env, fleet, "mqtt-steady", steady.acked)
    cpu = {n: s - cpu_before.get(n, 0.0) for n, s in processes.all_parts_cpu().items() if n in PARTS}
    cpu["load generator"] = steady.cpu_s
    per_reading = {n: s / max(steady.acked, 1) * 1e6 for n, s in cpu.items()}
    results["mqtt_cpu_us_per_reading_by_part"] = per_reading
    results["mqtt_cpu_us_per_reading"] = sum(v for n, v in per_reading.items() if n != "load generator")
    say("  µs of CPU per reading at 10,000/s: " + ", ".join(f"{n} {v:.1f}" for n, v in per_reading.items()))

    # Devices held: each one reading a second.
    devices = 2_000 if short else 10_000
    rss: dict[str, float] = {}

    async def sample() -> None:
        while True:
            for name, pid in processes.pids(PARTS).items():
                if name not in ("mosquitto", "bridge"):
                    continue
                rss[name] = max(rss.get(name, 0.0), procfs.tree_rss_mb(pid))
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    try:
        held = await fleet.run(
            "mqtt-devices", "mqtt", seconds, target=broker, streams=devices, rate=devices, warmup="3s",
            open_rate=2_000, reading_time="server",
        )  # fmt: skip
    finally:
        sampler.cancel()
    await _stored_all(env, fleet, "mqtt-devices", held.acked)
    results["mqtt_devices_offered"] = devices
    results["mqtt_devices_held"] = held.result["streams_open"]
    results["mqtt_puback_p99_ms"] = held.p99_ms
    results["mqtt_broker_rss_mb"] = rss.get("mosquitto", 0.0)
    results["mqtt_bridge_rss_mb"] = rss.get("bridge", 0.0)
    results["mqtt_broker_bridge_rss_mb"] = results["mqtt_broker_rss_mb"] + results["mqtt_bridge_rss_mb"]
    return results


async def _stored_all(env: Env, fleet: Fleet, name: str, acked: int, within_s: float = 300) -> int:
    """Waits until what the broker acknowledged of workload `name` is stored; the rows stored."""
    prefix = f"{fleet.prefix}{name}-"
    deadline = time.monotonic() + within_s
    while (rows := await measure.stored(env, prefix)) < acked:
        if time.monotonic() > deadline:
            env.say(
                f"  note: {name}: {rows:,} of {acked:,} acknowledged readings stored after {within_s:.0f} s"
            )
            break
        await asyncio.sleep(0.2)
    return rows
