"""The warning counters in Redis, updated once per reading, however often a reading arrives.

Redis data (operators read it; the first is a contract):
  warnings:{<sensor_id>}          hash: metric type -> consecutive warnings (absent = 0)
  last-reading:{<sensor_id>}      hash: metric type -> time (µs) of the latest reading counted
  processor:pending:<topic>:<p>   list: serialized metrics.v1.Event raised but not yet in Kafka

One script per partition batch updates the counters and stores the events it raised, atomically.
A reading not newer than the latest one counted for its sensor and type is skipped: so a batch
that Kafka redelivers after a crash, or that a client sends again, is not counted twice (the
braces are a Redis Cluster hash tag: a sensor's two hashes share a slot). Stored events are
produced to Kafka before the partition's offsets are committed, and again after a crash if they
may not have been.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis

# ARGV: per reading, (sensor id, metric type, N or 0 below the threshold, time in µs, event bytes).
# Returns the number of events raised, then "<sensor>\0<type>" of every counter it left at 0.
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
local zero = {}
for i = 1, #ARGV, 5 do
  local sensor, metric_type, count = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local last_key = 'last-reading:{' .. sensor .. '}'
  local last = tonumber(call('HGET', last_key, metric_type) or '-1')
  local field = sensor .. '\\0' .. metric_type
  if tonumber(ARGV[i + 3]) > last then
    call('HSET', last_key, metric_type, ARGV[i + 3])
    local key = 'warnings:{' .. sensor .. '}'
    if count == 0 then
      local current = call('HGET', key, metric_type)
      if current and current ~= '0' then
        call('HSET', key, metric_type, 0)
      end
      zero[field] = true
    else
      if call('HINCRBY', key, metric_type, 1) == count then
        call('RPUSH', KEYS[1], ARGV[i + 4])
        raised = raised + 1
      end
      zero[field] = false
    end
  elseif zero[field] == nil then
    local current = call('HGET', 'warnings:{' .. sensor .. '}', metric_type)
    zero[field] = not current or current == '0'
  end
end
local reply = {raised}
for field, is_zero in pairs(zero) do
  if is_zero then
    reply[#reply + 1] = field
  end
end
return reply
"""


def counter_key(sensor_id: str) -> str:
    return "warnings:{" + sensor_id + "}"


def last_reading_key(sensor_id: str) -> str:
    return "last-reading:{" + sensor_id + "}"


async def delete_sensors(redis: aioredis.Redis, prefix: str) -> int:
    """Removes the counters and last-reading times of the sensors whose ids start with `prefix`
    (a simulated fleet's, once it is gone); returns how many keys were deleted."""
    if not prefix or any(c in prefix for c in "*?[]\\{}"):
        raise ValueError(f"prefix: {prefix!r} is empty or has glob or hash-tag characters")
    deleted = 0
    for pattern in (counter_key(prefix + "*"), last_reading_key(prefix + "*")):
        keys = [key async for key in redis.scan_iter(match=pattern, count=1000)]
        for i in range(0, len(keys), 1000):
            deleted += await redis.unlink(*keys[i : i + 1000])
    return deleted


def field_of(sensor_id: str, metric_type: str) -> str:
    """How the script and KnownZero name one counter."""
    return sensor_id + "\0" + metric_type


class KnownZero:
    """Counters this processor knows are 0 because its own last applied update of them was a reset.

    A reading below the threshold for such a counter changes nothing, so it needs no Redis call;
    most readings are like that. Only updates that Redis applied feed it (`commit` after the
    script), it forgets partitions that move to another processor, and it starts over past `limit`
    keys, so it is never wrong, only sometimes empty.
    """

    def __init__(self, limit: int = 1_000_000) -> None:
        self._limit = limit
        self._keys: dict[int, set[str]] = {}
        self._size = 0

    def of(self, partition: int) -> set[str]:
        return self._keys.setdefault(partition, set())

    def commit(self, partition: int, touched: Iterable[str], zero: set[str]) -> None:
        """Records what a Redis script reported: of the counters it `touched`, those now at 0."""
        keys = self.of(partition)
        before = len(keys)
        for field in touched:
            if field in zero:
                keys.add(field)
            else:
                keys.discard(field)
        self._size += len(keys) - before
        if self._size > self._limit:
            self._keys.clear()
            self._size = 0

    def forget(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._size -= len(self._keys.pop(partition, ()))


class Counters:
    def __init__(self, client: aioredis.Redis, topic: str) -> None:
        self._client = client
        self._topic = topic
        self._apply = client.register_script(APPLY)

    def pending_key(self, partition: int) -> str:
        return f"processor:pending:{self._topic}:{partition}"

    async def apply(self, partition: int, args: Sequence[bytes | str | int]) -> tuple[int, set[str]]:
        """Applies readings given as (sensor id, metric type, N or 0, time µs, event bytes) quintuples.

        N is the rule's count for a warning, 0 for a reading below the threshold; the event bytes
        are stored (to be produced) when the counter becomes exactly N. Returns how many events
        were raised, and the fields (`field_of`) of the counters the batch left at 0.
        """
        reply = await self._apply(keys=[self.pending_key(partition)], args=args)
        return int(reply[0]), {field.decode() for field in reply[1:]}

    async def pending(self, partition: int) -> list[bytes]:
        """The events raised on `partition` and not yet confirmed as produced, oldest first."""
        events: list[bytes] = await self._client.lrange(self.pending_key(partition), 0, -1)  # type: ignore[assignment]
        return events

    async def confirm(self, partition: int, produced: int) -> None:
        """Drops the first `produced` pending events of `partition`: they are in Kafka."""
        await self._client.ltrim(self.pending_key(partition), produced, -1)
