"""The processor's counters on a real Redis Cluster (3 masters, a replica each; its own, started by
the tests: tests/integration/conftest.py), as the processor's ACL user: a round whose sensors live
on every master, clears by hand, cleanup, and a master killed with -9 between rounds and during them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from google.protobuf import timestamp_pb2
from redis.exceptions import RedisError

from metrics.v1 import event_pb2, metric_pb2
from processor.rules import Rule, parse_rules
from processor.stream.counters import (
    CLEARED_BY_HAND,
    Counters,
    alarms_key,
    counter_key,
    delete_sensors,
    pending_key,
    sensor_keys,
)
from processor.stream.redis_nodes import RedisNodes
from processor.stream.rounds import script_args
from runtime.records import checked
from stack.redis_cluster import Node
from testkit.rules_model import apply
from tests.helpers import past_us
from tests.integration.conftest import ClusterUnderTest

RULES = parse_rules(["temperature:95:3"])
BASE_US = past_us(2)


def spread(nodes: RedisNodes, prefix: str, per_node: int = 2) -> list[str]:
    """Sensor ids, `per_node` on each master."""
    masters = {node.name for node in nodes.client.get_primaries()}  # type: ignore[union-attr]
    chosen: dict[str, list[str]] = {name: [] for name in masters}
    i = 0
    while any(len(v) < per_node for v in chosen.values()):
        sensor = f"{prefix}-{i}"
        [node] = nodes.group([sensor])
        if len(chosen[node]) < per_node:
            chosen[node].append(sensor)
        i += 1
    return [s for v in chosen.values() for s in v]


def readings(sensors: list[str], values: list[float], start: int = 0) -> list[metric_pb2.Metric]:
    metrics = []
    for i, value in enumerate(values):
        for sensor in sensors:
            metric = metric_pb2.Metric(sensor_id=sensor, metric_type="temperature", value=value)
            metric.reading_time.FromMicroseconds(BASE_US + start + i)
            metrics.append(metric)
    return metrics


async def a_round(counters: Counters, metrics: list[metric_pb2.Metric], confirm: bool = True) -> list[bytes]:
    args: list[object] = []
    script_args(args, checked(metrics), metrics, RULES, timestamp_pb2.Timestamp(), {})
    entries = await counters.apply(0, dict.fromkeys(m.sensor_id for m in metrics), args)  # type: ignore[arg-type]
    if confirm:
        await counters.confirm(entries)
    return [e for _, sensor_entries in entries for e in sensor_entries]


async def test_a_round_spanning_every_master(cluster_redis: RedisNodes, cluster_admin: RedisNodes) -> None:
    sensors = spread(cluster_redis, f"span-{uuid.uuid4().hex[:8]}")
    assert len(cluster_redis.group(sensors)) == 3, "every master has some"
    counters = Counters(cluster_redis)
    produced = await a_round(counters, readings(sensors, [96.0, 97.0, 98.0, 99.0]))
    events = [event_pb2.Event.FromString(e) for e in produced]
    assert sorted(e.sensor_id for e in events) == sorted(sensors)
    assert {e.value for e in events} == {98.0}
    for sensor in sensors:
        assert await cluster_admin.client.hgetall(counter_key(sensor)) == {b"temperature": b"4"}
        assert await cluster_admin.client.llen(pending_key(sensor)) == 0


async def test_a_clear_by_hand_on_a_cluster(cluster_redis: RedisNodes, cluster_admin: RedisNodes) -> None:
    # An alarm raised by a round; cleared by hand as AlarmsService does it (the index of clears by
    # hand, then the script on the sensor's node): its event waits in the sensor's pending list,
    # which the sensor's next round hands back with its own.
    [sensor] = spread(cluster_redis, f"clear-{uuid.uuid4().hex[:8]}", per_node=1)[:1]
    counters = Counters(cluster_redis)
    rule = Rule("temperature", 95, 1, rule_id="r-clear", clear_count=3)
    detect = timestamp_pb2.Timestamp()
    args: list[object] = []
    raising = readings([sensor], [99.0])
    script_args(args, checked(raising), raising, [rule], detect, {})
    [(_, [raised])] = await counters.apply(0, [sensor], args)  # type: ignore[arg-type]
    await counters.confirm([(sensor, [raised])])
    state = await cluster_admin.client.hget(alarms_key(sensor), rule.field)
    member = f"{sensor}|{event_pb2.Event.FromString(raised).alarm_id}"
    assert await counters.clear_by_hand(member, rule.field, state, b"cleared-event")
    assert await cluster_admin.client.sismember(CLEARED_BY_HAND, member)
    args = []
    clearing = readings([sensor], [10.0], start=10)
    script_args(args, checked(clearing), clearing, [rule], detect, {})
    assert await counters.apply(0, [sensor], args) == [(sensor, [b"cleared-event"])]  # type: ignore[arg-type]
    assert await cluster_redis.client.srem(CLEARED_BY_HAND, member) == 1


async def test_delete_sensors_scans_every_master(
    cluster_redis: RedisNodes, cluster_admin: RedisNodes
) -> None:
    prefix = f"gone-{uuid.uuid4().hex[:8]}"
    sensors = spread(cluster_redis, prefix)
    await a_round(Counters(cluster_redis), readings(sensors, [96.0]))
    assert await delete_sensors(cluster_admin.client, prefix) == 2 * len(sensors)  # warnings, last-reading
    for sensor in sensors:
        assert not await cluster_admin.client.exists(*sensor_keys(sensor))


async def test_a_master_killed_between_rounds_loses_nothing_committed(
    redis_cluster: ClusterUnderTest, cluster_redis: RedisNodes, cluster_admin: RedisNodes
) -> None:
    # Rounds confirmed by a replica of each node (WAIT); then a master is killed with -9 and its
    # replica promoted: it holds every round, before any other write. The old master comes back as
    # the new one's replica, and the rounds go on, on the new map: counters and events are the model's.
    sensors = spread(cluster_redis, f"failover-{uuid.uuid4().hex[:8]}")
    counters = Counters(cluster_redis)
    values = [96.0, 97.0, 10.0, 98.0, 99.0, 100.0, 10.0, 101.0, 102.0, 103.0]
    produced = []
    for i, value in enumerate(values[:5]):
        produced += await a_round(counters, readings(sensors, [value], start=i))
    victim = next(
        n for n in redis_cluster.cluster.masters() if n.address == cluster_redis.node_of(sensors[0])
    )
    replica = redis_cluster.cluster.replica_of(victim)
    redis_cluster.cluster.kill(victim)
    redis_cluster.cluster.wait_master(replica)
    model: dict[tuple[str, str], int] = {}
    for sensor in sensors:
        assert int(await cluster_admin.client.hget(counter_key(sensor), "temperature") or 0) == model_count(
            values[:5]
        )
    redis_cluster.cluster.start_node(victim)  # back, as the replica of the promoted one
    await wait_replica(redis_cluster, replica)
    for i, value in enumerate(values[5:], start=5):
        produced += await a_round(counters, readings(sensors, [value], start=i))
    raised = apply(model, RULES, [(s, "temperature", v) for v in values for s in sensors])
    assert sorted(event_pb2.Event.FromString(e).sensor_id for e in produced) == sorted(
        s for i, s in enumerate(s for _ in values for s in sensors) if i in raised
    )
    for sensor in sensors:
        assert (
            await cluster_admin.client.hget(counter_key(sensor), "temperature")
            == str(model[(sensor, "temperature")]).encode()
        )
        assert await cluster_admin.client.llen(pending_key(sensor)) == 0


async def test_a_master_killed_during_rounds_loses_nothing(
    redis_cluster: ClusterUnderTest, cluster_redis: RedisNodes, cluster_admin: RedisNodes
) -> None:
    # A processor's loop (apply, produce, confirm, commit; a failed round is tried again, as Kafka
    # redelivers it) runs while a master is killed with -9: its rounds fail until the replica is
    # promoted and has a replica of its own (the old master, restarted), then go on. Every event is
    # produced (at least once, the same bytes), the counters are the model's, nothing stays pending.
    sensors = spread(cluster_redis, f"midway-{uuid.uuid4().hex[:8]}")
    counters = Counters(cluster_redis)
    values = [96.0, 97.0, 98.0, 10.0, 99.0, 100.0, 101.0, 10.0] * 5
    produced: dict[bytes, None] = {}
    committed = 0
    failures = 0

    # The loop waits after 5 rounds until the master is dead: the rest of its rounds meet the
    # failover (on their own they could all be done before the kill).
    killed = asyncio.Event()

    async def processor() -> None:
        nonlocal committed, failures
        while committed < len(values):
            if committed == 5:
                await killed.wait()
            try:
                produced.update(
                    dict.fromkeys(
                        await a_round(counters, readings(sensors, [values[committed]], start=committed))
                    )
                )
            except RedisError:
                failures += 1
                await asyncio.sleep(0.05)  # the processor's retry delay (shorter here)
                continue
            committed += 1

    loop = asyncio.create_task(processor())
    try:
        await wait_for(lambda: committed >= 5)
        victim = next(
            n for n in redis_cluster.cluster.masters() if n.address == cluster_redis.node_of(sensors[0])
        )
        replica = redis_cluster.cluster.replica_of(victim)
        redis_cluster.cluster.kill(victim)
        killed.set()
        await asyncio.to_thread(redis_cluster.cluster.wait_master, replica)
        redis_cluster.cluster.start_node(victim)
        await wait_replica(redis_cluster, replica)
        await asyncio.wait_for(loop, 60)
    finally:
        loop.cancel()
    assert failures > 0, "rounds failed while the master was gone"
    model: dict[tuple[str, str], int] = {}
    raised = apply(model, RULES, [(s, "temperature", v) for v in values for s in sensors])
    assert len(produced) == len(raised)
    for sensor in sensors:
        assert (
            await cluster_admin.client.hget(counter_key(sensor), "temperature")
            == str(model[(sensor, "temperature")]).encode()
        )
        assert await cluster_admin.client.llen(pending_key(sensor)) == 0


def model_count(values: list[float]) -> int:
    model: dict[tuple[str, str], int] = {}
    apply(model, RULES, [("s", "temperature", v) for v in values])
    return model.get(("s", "temperature"), 0)


async def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def wait_replica(redis_cluster: ClusterUnderTest, master: Node) -> None:
    """Until `master` has its replica in sync (so that WAIT 1 can succeed) and the cluster is ok."""
    await asyncio.to_thread(redis_cluster.cluster.wait_replicas, master)
    await asyncio.to_thread(redis_cluster.cluster.wait_ok)
