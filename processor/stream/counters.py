"""The warning counters in Redis, updated once per reading, however often a reading arrives.

Redis data (operators read it; the first is a contract), all of a sensor in one hash slot (the
braces are a Redis Cluster hash tag):
  warnings:{<sensor_id>}          hash: rule -> consecutive warnings (absent = 0)
  last-reading:{<sensor_id>}      hash: rule -> time (µs) of the latest reading applied
  warning-since:{<sensor_id>}     hash: rule with a duration -> time (µs) of its run's first warning,
                                  or "raised" once the run raised its event
  alarms:{<sensor_id>}            hash: rule with alarms -> its active alarm, "<consecutive clears>|
                                  <matches>|<latest matching value>|<its time µs>|<raising event>"
                                  (alarms.py reads it)
  processor:pending:{<sensor_id>} list: the sensor's events not yet confirmed in Kafka: a serialized
                                  metrics.v1.Event, or an alarm cleared, "cleared|<detect µs>|<value>|
                                  <time µs>|<alarm>", which alarms.py makes the event it is
A rule's field is its id; for a rule of the original configuration (METRICS_PROCESSOR_RULES), whose
id is its metric type, the metric type as before.
  processor:cleared-by-hand       set: "<sensor>|<alarm id>" of each clear by hand whose event may
                                  not be produced yet (processor/control/alarms_api.py)

A partition's round runs one script over its sensors on a single server; on a Redis Cluster, one
per hash slot of its sensors, sent to each node in one pipeline (redis_nodes.py). Each
declares the five keys of each of its sensors. The script updates the counters
and appends the events it raised to the sensors' pending lists, atomically, and returns the whole
pending lists of its sensors, old entries and new. Every reading with a rule, a warning or not, is
applied to the rule unless it is not newer than the latest one applied to the rule for its sensor:
so a round that Kafka redelivers after a crash, or that a client sends again, is not counted twice,
and a late reading (older than one already applied) changes nothing, however the readings were
batched. The processor produces the returned entries to Kafka, then removes each from its list
(LREM by value: idempotent, and right beside a concurrent clear by hand or another round), then
commits the offsets.

Why nothing stays pending after a crash, without a list per partition: an entry is added only by
a round that contains its sensor, and removed before that round's offsets are committed. After a
crash in between, Kafka redelivers the uncommitted records, which contain that sensor again, and
the script returns its pending entries although every reading is skipped as not newer. (A clear by
hand adds an entry outside any round: processor:cleared-by-hand names its sensor until it is
produced.) The one-off `drain_legacy` produces what lists of the previous scheme, one per
partition (processor:pending:<topic>:<p>), still hold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from processor.stream.redis_nodes import RedisNodes, gather_all

log = logging.getLogger(__name__)

# The scripts (their keys and arguments are described in them).
APPLY = (Path(__file__).parent / "counters.lua").read_text()
CLEAR_BY_HAND = (Path(__file__).parent / "clear_by_hand.lua").read_text()


# The clears by hand whose events may not be in Kafka yet (processor/control/alarms_api.py).
CLEARED_BY_HAND = "processor:cleared-by-hand"


def counter_key(sensor_id: str) -> str:
    return "warnings:{" + sensor_id + "}"


def last_reading_key(sensor_id: str) -> str:
    return "last-reading:{" + sensor_id + "}"


def warning_since_key(sensor_id: str) -> str:
    return "warning-since:{" + sensor_id + "}"


def alarms_key(sensor_id: str) -> str:
    return "alarms:{" + sensor_id + "}"


def pending_key(sensor_id: str) -> str:
    return "processor:pending:{" + sensor_id + "}"


def sensor_keys(sensor_id: str) -> tuple[str, str, str, str, str]:
    """The keys of a sensor, in the order the scripts declare them."""
    return (
        counter_key(sensor_id),
        last_reading_key(sensor_id),
        warning_since_key(sensor_id),
        alarms_key(sensor_id),
        pending_key(sensor_id),
    )


# The pending list of clears by hand of the previous scheme; drained once, see drain_legacy.
LEGACY_CLEARED_PENDING = "processor:pending:alarms"


def legacy_pending_key(topic: str, partition: int) -> str:
    """A pending list of the previous scheme (one per partition); drained once, see drain_legacy."""
    return f"processor:pending:{topic}:{partition}"


async def delete_sensors(redis: Any, prefix: str) -> int:
    """Removes the counters, last-reading and warning-since times, active alarms and pending lists of
    the sensors whose ids start with `prefix` (a simulated fleet's, once it is gone); returns how
    many keys were deleted. `redis`: a client of one server or of a cluster (every master is scanned)."""
    if not prefix or any(c in prefix for c in "*?[]\\{}"):
        raise ValueError(f"prefix: {prefix!r} is empty or has glob or hash-tag characters")
    deleted = 0
    for pattern in sensor_keys(prefix + "*"):
        keys = [key async for key in redis.scan_iter(match=pattern, count=1000)]
        for i in range(0, len(keys), 1000):
            deleted += await redis.unlink(*keys[i : i + 1000])
    return deleted


def field_of(sensor_id: str, rule_field: str) -> str:
    """How script_args names one counter."""
    return sensor_id + "\0" + rule_field


Pending = list[tuple[str, list[bytes]]]


class Counters:
    def __init__(self, nodes: RedisNodes) -> None:
        self._nodes = nodes
        self._client = nodes.client

    async def apply(
        self, detect_us: int, sensors: Iterable[str], args: Sequence[bytes | str | int]
    ) -> Pending:
        """Applies readings given as (sensor id, rule field, spec, time µs, event bytes) quintuples
        (see APPLY; processor.stream.rounds.script_args makes them), and returns the pending entries of
        `sensors` (which must include every sensor of `args`): (sensor, entries), oldest first.

        One script on a single server; on a cluster, one per hash slot, in one pipeline per node,
        the nodes concurrently. Each script is all or nothing. After a topology error (MOVED, a
        node gone, a failover) the slot map is read again and the whole call made once more: what
        had been applied is skipped as not newer, so that is exact.
        The event bytes are stored (to be produced) when the reading meets the rule's condition, and
        an alarm cleared is stored as its entry, with `detect_us` as its detect time.
        """
        members = list(sensors)
        return await self._nodes.retried(lambda: self._apply(detect_us, members, args))

    async def _apply(self, detect_us: int, sensors: list[str], args: Sequence[bytes | str | int]) -> Pending:
        groups = self._nodes.group(sensors)
        # Calls that change nothing still write (a no-op) when the caller waits for replicas: the
        # last of a node's pipeline is told to (see APPLY).
        wait = "1" if self._nodes.replicas else "0"
        if len(groups) == 1 and len(calls := next(iter(groups.values()))) == 1:
            [node] = groups
            [reply] = await self._nodes.run_scripts(
                node, APPLY, [(self._keys(calls[0]), [detect_us, wait, *args])]
            )
            return self._pending(calls[0], reply)
        where: dict[str, list[Any]] = {}
        per_call: dict[str, list[list[Any]]] = {}
        for node, node_calls in groups.items():
            per_call[node] = [[detect_us, "0"] for _ in node_calls]
            per_call[node][-1][1] = wait
            for members, call_args in zip(node_calls, per_call[node], strict=True):
                for sensor in members:
                    where[sensor] = call_args
        for i in range(0, len(args), 5):
            where[args[i]].extend(args[i : i + 5])  # type: ignore[index]
        replies = await gather_all(
            *(
                self._nodes.run_scripts(
                    node,
                    APPLY,
                    [(self._keys(m), a) for m, a in zip(node_calls, per_call[node], strict=True)],
                )
                for node, node_calls in groups.items()
            )
        )
        return [
            entry
            for node_calls, node_replies in zip(groups.values(), replies, strict=True)
            for members, reply in zip(node_calls, node_replies, strict=True)
            for entry in self._pending(members, reply)
        ]

    @staticmethod
    def _keys(sensors: list[str]) -> list[str]:
        return [key for sensor in sensors for key in sensor_keys(sensor)]

    @staticmethod
    def _pending(sensors: list[str], reply: list[Any]) -> Pending:
        return [(sensors[(position - 1) // 5], entries) for position, entries in reply]

    async def clear_by_hand(self, member: str, rule_field: str, state: bytes, event: bytes) -> bool:
        """Ends a sensor's active alarm of a rule if Redis still holds it as `state`, and stores the
        event of its clearing in the sensor's pending list; whether it did. `member`, the
        "<sensor>|<alarm id>" of the clear, is first added to CLEARED_BY_HAND, so that a processor
        that dies before producing the event leaves it for the next one to produce."""
        await self._nodes.write(CLEARED_BY_HAND, "SADD", CLEARED_BY_HAND, member)
        warnings, _, since, alarms_hash, pending = sensor_keys(member.partition("|")[0])
        keys = [alarms_hash, warnings, since, pending]
        return bool(await self._nodes.script(CLEAR_BY_HAND, keys, [state, event, rule_field]))

    async def confirm(self, produced: Pending) -> None:
        """Removes entries that are in Kafka from their sensors' pending lists."""
        async with self._client.pipeline(transaction=False) as pipe:
            for sensor, entries in produced:
                key = pending_key(sensor)
                for entry in entries:
                    pipe.lrem(key, 0, entry)  # type: ignore[arg-type]
            await pipe.execute()


async def drain_legacy(redis: Any, keys: Iterable[str], produce: Any) -> int:
    """Produces what pending lists of the previous scheme still hold (`produce(entries)`), and
    removes each entry once produced; returns how many there were. On a cluster they never exist."""
    drained = 0
    for key in keys:
        entries: list[bytes] = await redis.lrange(key, 0, -1)
        if entries:
            await produce(entries)
            for entry in entries:
                await redis.lrem(key, 0, entry)
            drained += len(entries)
            log.info("produced %d event(s) left in %s by the previous version", len(entries), key)
    return drained
