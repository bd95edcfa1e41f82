"""The warning counters in Redis, updated once per reading, however often a reading arrives.

Redis data (operators read it; the first is a contract):
  warnings:{<sensor_id>}          hash: rule -> consecutive warnings (absent = 0)
  last-reading:{<sensor_id>}      hash: rule -> time (µs) of the latest reading applied
  warning-since:{<sensor_id>}     hash: rule with a duration -> time (µs) of its run's first warning,
                                  or "raised" once the run raised its event
A rule's field is its id; for a rule of the original configuration (METRICS_PROCESSOR_RULES), whose
id is its metric type, the metric type as before.
  processor:pending:<topic>:<p>   list: serialized metrics.v1.Event raised but not yet in Kafka

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

# ARGV: per reading and rule, (sensor id, rule field, N or 0 for a reading that does not meet the
# rule's condition — "N/D" and "0/D" for a rule whose condition must hold D µs —, time in µs, event).
# Returns the number of events raised.
APPLY = """
-- Redis commands that name their key when they fail (a key of the wrong type, say).
local function call(command, key, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) == 'table' and reply.err then
    error(reply.err .. ' (key ' .. key .. ')')
  end
  return reply
end
local raised = 0
for i = 1, #ARGV, 5 do
  local sensor, field, spec = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local count, duration = tonumber(spec), 0
  if not count then
    local slash = string.find(spec, '/', 1, true)
    count, duration = tonumber(string.sub(spec, 1, slash - 1)), tonumber(string.sub(spec, slash + 1))
  end
  local time = tonumber(ARGV[i + 3])
  local last_key = 'last-reading:{' .. sensor .. '}'
  local last = tonumber(call('HGET', last_key, field) or '-1')
  if time > last then
    call('HSET', last_key, field, ARGV[i + 3])
    local key = 'warnings:{' .. sensor .. '}'
    local since_key = 'warning-since:{' .. sensor .. '}'
    if count == 0 then
      local current = call('HGET', key, field)
      if current and current ~= '0' then
        call('HSET', key, field, 0)
      end
      if duration > 0 then
        call('HDEL', since_key, field)
      end
    elseif duration == 0 then
      if call('HINCRBY', key, field, 1) == count then
        call('RPUSH', KEYS[1], ARGV[i + 4])
        raised = raised + 1
      end
    else
      local n = call('HINCRBY', key, field, 1)
      local since = call('HGET', since_key, field)
      if n == 1 or not since then
        since = ARGV[i + 3]
        call('HSET', since_key, field, since)
      end
      if since ~= 'raised' and n >= count and time - tonumber(since) >= duration then
        call('RPUSH', KEYS[1], ARGV[i + 4])
        call('HSET', since_key, field, 'raised')
        raised = raised + 1
      end
    end
  end
end
return raised
"""


def counter_key(sensor_id: str) -> str:
    return "warnings:{" + sensor_id + "}"


def last_reading_key(sensor_id: str) -> str:
    return "last-reading:{" + sensor_id + "}"


def warning_since_key(sensor_id: str) -> str:
    return "warning-since:{" + sensor_id + "}"


async def delete_sensors(redis: aioredis.Redis, prefix: str) -> int:
    """Removes the counters, last-reading and warning-since times of the sensors whose ids start with `prefix`
    (a simulated fleet's, once it is gone); returns how many keys were deleted."""
    if not prefix or any(c in prefix for c in "*?[]\\{}"):
        raise ValueError(f"prefix: {prefix!r} is empty or has glob or hash-tag characters")
    deleted = 0
    for pattern in (
        counter_key(prefix + "*"),
        last_reading_key(prefix + "*"),
        warning_since_key(prefix + "*"),
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

    async def apply(self, partition: int, args: Sequence[bytes | str | int]) -> int:
        """Applies readings given as (sensor id, rule field, N or 0, time µs, event bytes) quintuples.

        N is the rule's count for a warning, 0 for a reading that does not meet it; the event bytes
        are stored (to be produced) when the counter becomes exactly N. Returns how many events
        were raised.
        """
        return int(await self._apply(keys=[self.pending_key(partition)], args=args))

    async def pending(self, partition: int) -> list[bytes]:
        """The events raised on `partition` and not yet confirmed as produced, oldest first."""
        events: list[bytes] = await self._client.lrange(self.pending_key(partition), 0, -1)  # type: ignore[assignment]
        return events

    async def confirm(self, partition: int, produced: int) -> None:
        """Drops the first `produced` pending events of `partition`: they are in Kafka."""
        await self._client.ltrim(self.pending_key(partition), produced, -1)
