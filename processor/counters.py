"""The warning counters in Redis, updated once per reading, however often a reading arrives.

Redis data (operators read it; the first is a contract):
  warnings:{<sensor_id>}          hash: rule -> consecutive warnings (absent = 0)
  last-reading:{<sensor_id>}      hash: rule -> time (µs) of the latest reading applied
  warning-since:{<sensor_id>}     hash: rule with a duration -> time (µs) of its run's first warning,
                                  or "raised" once the run raised its event
  alarms:{<sensor_id>}            hash: rule with alarms -> its active alarm, "<consecutive clears>|
                                  <matches>|<latest matching value>|<its time µs>|<raising event>"
                                  (processor/alarms.py reads it)
A rule's field is its id; for a rule of the original configuration (METRICS_PROCESSOR_RULES), whose
id is its metric type, the metric type as before.
  processor:pending:<topic>:<p>   list: events raised but not yet in Kafka: a serialized metrics.v1.Event,
                                  or an alarm cleared, "cleared|<detect µs>|<value>|<time µs>|<alarm>",
                                  which processor/alarms.py makes the event it is
  processor:pending:alarms        list: the same, of alarms cleared by hand (AlarmsService)

One script per partition batch updates the counters and stores the events it raised, atomically.
Every reading with a rule, a warning or not, is applied to the rule unless it is not newer than the
latest one applied to the rule for its sensor: so a batch that Kafka redelivers after a crash, or that a
client sends again, is not counted twice, and a late reading (older than one already applied)
changes nothing, however the readings were batched (the
braces are a Redis Cluster hash tag: a sensor's two hashes share a slot). Stored events are
produced to Kafka before the partition's offsets are committed, and again after a crash if they
may not have been.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

# ARGV: the round's detect time (µs), then per reading and rule, (sensor id, rule field, spec, time in
# µs, event). The spec is N, or 0 for a reading that does not meet the rule's condition; "N/D" and
# "0/D" for a rule whose condition must hold D µs; "N/D/M/<value>" and "0/D/M/<value>" for a rule
# with alarms cleared by M readings in a row (D = 0: no duration). Returns the number of entries
# stored (events raised, alarms cleared).
APPLY = """
-- Redis commands that name their key when they fail (a key of the wrong type, say).
local function call(command, key, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) == 'table' and reply.err then
    error(reply.err .. ' (key ' .. key .. ')')
  end
  return reply
end
local stored = 0
for i = 2, #ARGV, 5 do
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
  local last_key = 'last-reading:{' .. sensor .. '}'
  local last = tonumber(call('HGET', last_key, field) or '-1')
  if time > last then
    call('HSET', last_key, field, time_arg)
    local key = 'warnings:{' .. sensor .. '}'
    local since_key = 'warning-since:{' .. sensor .. '}'
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
        call('RPUSH', KEYS[1], event)
        stored = stored + 1
      end
    else
      local alarm_key = 'alarms:{' .. sensor .. '}'
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
            call('RPUSH', KEYS[1], 'cleared|' .. ARGV[1] .. '|' .. value .. '|' .. time_arg .. '|' .. state)
            stored = stored + 1
          else
            call('HSET', alarm_key, field, state)
          end
        else
          matches = tonumber(matches) + 1
          local state = '0|' .. matches .. '|' .. value .. '|' .. time_arg .. '|' .. raised_by
          call('HSET', alarm_key, field, state)
        end
      elseif met then
        call('RPUSH', KEYS[1], event)
        call('HSET', alarm_key, field, '0|1|' .. value .. '|' .. time_arg .. '|' .. event)
        stored = stored + 1
      end
    end
  end
end
return stored
"""


def counter_key(sensor_id: str) -> str:
    return "warnings:{" + sensor_id + "}"


def last_reading_key(sensor_id: str) -> str:
    return "last-reading:{" + sensor_id + "}"


def warning_since_key(sensor_id: str) -> str:
    return "warning-since:{" + sensor_id + "}"


def alarms_key(sensor_id: str) -> str:
    return "alarms:{" + sensor_id + "}"


async def delete_sensors(redis: aioredis.Redis, prefix: str) -> int:
    """Removes the counters, last-reading and warning-since times and active alarms of the sensors
    whose ids start with `prefix` (a simulated fleet's, once it is gone); returns how many keys were
    deleted."""
    if not prefix or any(c in prefix for c in "*?[]\\{}"):
        raise ValueError(f"prefix: {prefix!r} is empty or has glob or hash-tag characters")
    deleted = 0
    for pattern in (
        counter_key(prefix + "*"),
        last_reading_key(prefix + "*"),
        warning_since_key(prefix + "*"),
        alarms_key(prefix + "*"),
    ):
        keys = [key async for key in redis.scan_iter(match=pattern, count=1000)]
        for i in range(0, len(keys), 1000):
            deleted += await redis.unlink(*keys[i : i + 1000])
    return deleted


def field_of(sensor_id: str, rule_field: str) -> str:
    """How script_args names one counter."""
    return sensor_id + "\0" + rule_field


class Counters:
    def __init__(self, client: aioredis.Redis, topic: str) -> None:
        self._client = client
        self._topic = topic
        self._apply = client.register_script(APPLY)

    def pending_key(self, partition: int) -> str:
        return f"processor:pending:{self._topic}:{partition}"

    async def apply(self, partition: int, detect_us: int, args: Sequence[bytes | str | int]) -> int:
        """Applies readings given as (sensor id, rule field, spec, time µs, event bytes) quintuples
        (see APPLY; processor.service.script_args makes them).

        The event bytes are stored (to be produced) when the reading meets the rule's condition, and
        an alarm cleared is stored as its entry, with `detect_us` as its detect time. Returns how
        many entries were stored.
        """
        return int(await self._apply(keys=[self.pending_key(partition)], args=[detect_us, *args]))

    async def pending(self, partition: int) -> list[bytes]:
        """The events raised on `partition` and not yet confirmed as produced, oldest first."""
        events: list[bytes] = await self._client.lrange(self.pending_key(partition), 0, -1)  # type: ignore[assignment]
        return events

    async def confirm(self, partition: int, produced: int) -> None:
        """Drops the first `produced` pending events of `partition`: they are in Kafka."""
        await self._client.ltrim(self.pending_key(partition), produced, -1)
