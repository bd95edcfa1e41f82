"""The warning counters in Redis, updated once per reading, however often a reading arrives.

Redis data (operators read it; the first is a contract), all of a sensor in one hash slot (the
braces are a Redis Cluster hash tag):
  warnings:{<sensor_id>}          hash: rule -> consecutive warnings (absent = 0)
  last-reading:{<sensor_id>}      hash: rule -> time (µs) of the latest reading applied
  warning-since:{<sensor_id>}     hash: rule with a duration -> time (µs) of its run's first warning,
                                  or "raised" once the run raised its event
  alarms:{<sensor_id>}            hash: rule with alarms -> its active alarm, "<consecutive clears>|
                                  <matches>|<latest matching value>|<its time µs>|<raising event>"
                                  (processor/alarms.py reads it)
  processor:pending:{<sensor_id>} list: the sensor's events not yet confirmed in Kafka: a serialized
                                  metrics.v1.Event, or an alarm cleared, "cleared|<detect µs>|<value>|
                                  <time µs>|<alarm>", which processor/alarms.py makes the event it is
A rule's field is its id; for a rule of the original configuration (METRICS_PROCESSOR_RULES), whose
id is its metric type, the metric type as before.
  processor:cleared-by-hand       set: "<sensor>|<alarm id>" of each clear by hand whose event may
                                  not be produced yet (processor/alarms_api.py)

A partition's round runs one script over its sensors on a single server; on a Redis Cluster, one
per hash slot of its sensors, sent to each node in one pipeline (processor/redis_nodes.py). Each
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
from typing import Any

from processor.redis_nodes import RedisNodes, gather_all

log = logging.getLogger(__name__)

# KEYS: five per sensor, in the order of `sensor_keys` (on a cluster, sensors of one hash slot).
# ARGV: the round's detect time (µs), "1" if a call that changed nothing must still write (a no-op
# push and pop: the caller waits for replicas), then per reading and rule, (sensor id, rule field,
# spec, time in µs, event). The spec is N, or 0 for a reading that does not meet the rule's
# condition; "N/D" and "0/D" for a rule whose condition must hold D µs; "N/D/M/<value>" and
# "0/D/M/<value>" for a rule with alarms cleared by M readings in a row (D = 0: no duration).
# Returns the pending entries of the declared sensors that have any, as {position of the sensor's
# first key, {entries}}.
APPLY = """
-- Redis commands that name their key when they fail (a key of the wrong type, say).
local function call(command, key, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) == 'table' and reply.err then
    error(reply.err .. ' (key ' .. key .. ')')
  end
  return reply
end
-- Each sensor's keys, by its id: KEYS[base] is 'warnings:{<sensor>}' (10 characters, the id, '}').
local base_of = {}
for k = 1, #KEYS, 5 do
  base_of[string.sub(KEYS[k], 11, -2)] = k
end
local wrote = false
for i = 3, #ARGV, 5 do
  local sensor, field, spec, time_arg, event = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local count, duration, clear_count, value = tonumber(spec), 0, 0, nil
  if not count then
    local n, d, m, v = string.match(spec, '^(%d+)/(%d+)/(%d+)/(.+)$')
    if not n then
      n, d = string.match(spec, '^(%d+)/(%d+)$')
    end
    count, duration, clear_count, value = tonumber(n), tonumber(d), tonumber(m or 0), v
  end
  local time = tonumber(time_arg)
  local base = base_of[sensor]
  if not base then
    error('sensor ' .. sensor .. ' has no keys declared')
  end
  local key, last_key, since_key = KEYS[base], KEYS[base + 1], KEYS[base + 2]
  local alarm_key, pending = KEYS[base + 3], KEYS[base + 4]
  local last = tonumber(call('HGET', last_key, field) or '-1')
  if time > last then
    wrote = true
    call('HSET', last_key, field, time_arg)
    -- Whether this reading meets the rule's raising condition.
    local met = false
    if count == 0 then
      local current = call('HGET', key, field)
      if current and current ~= '0' then
        call('HSET', key, field, 0)
      end
      if duration > 0 then
        call('HDEL', since_key, field)
      end
    elseif duration == 0 then
      met = call('HINCRBY', key, field, 1) == count
    else
      local n = call('HINCRBY', key, field, 1)
      local since = call('HGET', since_key, field)
      if n == 1 or not since then
        since = time_arg
        call('HSET', since_key, field, since)
      end
      if since ~= 'raised' and n >= count and time - tonumber(since) >= duration then
        met = true
        call('HSET', since_key, field, 'raised')
      end
    end
    if clear_count == 0 then
      if met then
        call('RPUSH', pending, event)
      end
    else
      local alarm = call('HGET', alarm_key, field)
      if alarm then
        local clears, matches, last_value, last_time, at =
          string.match(alarm, '^(%d+)|(%d+)|([^|]*)|(%d+)|()')
        local raised_by = string.sub(alarm, at)
        if count == 0 then
          clears = tonumber(clears) + 1
          local state = clears .. '|' .. matches .. '|' .. last_value .. '|' .. last_time .. '|' .. raised_by
          if clears >= clear_count then
            call('HDEL', alarm_key, field)
            call('RPUSH', pending, 'cleared|' .. ARGV[1] .. '|' .. value .. '|' .. time_arg .. '|' .. state)
          else
            call('HSET', alarm_key, field, state)
          end
        else
          matches = tonumber(matches) + 1
          local state = '0|' .. matches .. '|' .. value .. '|' .. time_arg .. '|' .. raised_by
          call('HSET', alarm_key, field, state)
        end
      elseif met then
        call('RPUSH', pending, event)
        call('HSET', alarm_key, field, '0|1|' .. value .. '|' .. time_arg .. '|' .. event)
      end
    end
  end
end
-- A call that changed nothing still writes (a no-op push and pop) when the caller waits for
-- replicas: WAIT then covers what an earlier call, whose reply was lost, wrote on this node.
if not wrote and ARGV[2] == '1' then
  call('RPUSH', KEYS[5], '')
  call('RPOP', KEYS[5])
end
-- Every declared sensor's entries to produce, old and new: {position of its keys, {entries}}.
local result = {}
for k = 1, #KEYS, 5 do
  local entries = redis.call('LRANGE', KEYS[k + 4], 0, -1)
  if #entries > 0 then
    result[#result + 1] = {k, entries}
  end
end
return result
"""


# The clears by hand whose events may not be in Kafka yet (processor/alarms_api.py).
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
        (see APPLY; processor.service.script_args makes them), and returns the pending entries of
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
