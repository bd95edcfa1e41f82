"""The warning counters in Redis, updated once per reading even when Kafka redelivers.

Redis data (operators read it; the first is a contract):
  warnings:{<sensor_id>}          hash: metric type -> consecutive warnings (absent = 0)
  processor:applied:<topic>       hash: partition -> highest offset whose readings are counted
  processor:pending:<topic>:<p>   list: serialized metrics.v1.Event raised but not yet in Kafka

One script per partition batch updates the counters, records the batch's offset and stores the
events it raised, atomically. Readings at or below the recorded offset are skipped, so a batch
redelivered after a crash is not counted twice; stored events are produced to Kafka before the
partition's offsets are committed, and again after a crash if they may not have been.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis

APPLY = """
local applied = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
local raised = 0
for i = 3, #ARGV, 5 do
  if tonumber(ARGV[i]) > applied then
    local key, metric_type, count = ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
    if count == 0 then
      local current = redis.call('HGET', key, metric_type)
      if current and current ~= '0' then
        redis.call('HSET', key, metric_type, 0)
      end
    elseif redis.call('HINCRBY', key, metric_type, 1) == count then
      redis.call('RPUSH', KEYS[2], ARGV[i + 4])
      raised = raised + 1
    end
  end
end
if tonumber(ARGV[2]) > applied then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return raised
"""


def counter_key(sensor_id: str) -> str:
    return "warnings:{" + sensor_id + "}"


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

    def commit(self, partition: int, changes: dict[str, bool]) -> None:
        """Records the counters a Redis script has just set to 0 (True) or above 0 (False)."""
        keys = self.of(partition)
        before = len(keys)
        for key, zero in changes.items():
            if zero:
                keys.add(key)
            else:
                keys.discard(key)
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
        self._applied_key = f"processor:applied:{topic}"
        self._apply = client.register_script(APPLY)

    def pending_key(self, partition: int) -> str:
        return f"processor:pending:{self._topic}:{partition}"

    async def apply(self, partition: int, last_offset: int, args: Sequence[bytes | str | int]) -> int:
        """Applies readings given as (offset, counter key, type, count or 0, event bytes) quintuples.

        `count` is the rule's N for a warning and 0 for a reading below the threshold; the event
        bytes are stored (to be produced) when the counter becomes exactly N. Returns how many
        events were raised.
        """
        raised = await self._apply(keys=[self._applied_key, self.pending_key(partition)],
                                   args=[partition, last_offset, *args])  # fmt: skip
        return int(raised)

    async def pending(self, partition: int) -> list[bytes]:
        """The events raised on `partition` and not yet confirmed as produced, oldest first."""
        events: list[bytes] = await self._client.lrange(self.pending_key(partition), 0, -1)  # type: ignore[assignment]
        return events

    async def confirm(self, partition: int, produced: int) -> None:
        """Drops the first `produced` pending events of `partition`: they are in Kafka."""
        await self._client.ltrim(self.pending_key(partition), produced, -1)

    async def applied_offset(self, partition: int) -> int:
        value = await self._client.hget(self._applied_key, str(partition))
        return -1 if value is None else int(value)
