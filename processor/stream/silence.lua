-- Silence rules (processor/stream/silence.py): one script of a few verbs, on the keys of one events
-- topic (one hash slot). A "field" is "<rule id>|<device id>".
--   KEYS[1] due      sorted set: field -> when (µs) the device is silent for the rule, unless it is
--                    heard from before; a field with an active alarm is not in it
--   KEYS[2] alarms   hash: field -> the raising event of its active alarm
--   KEYS[3] pending  list: entries not yet confirmed in Kafka (a raising event, or
--                    "cleared|<detect µs>|<by>|<raising event>")
-- ARGV[1] the verb, ARGV[2] now (µs), then the verb's arguments. The verbs that change something
-- return the pending list's length after it.
--
-- seen     pairs (field, silence µs): the device was heard from now: its alarm of the rule, if
--          any, is cleared ("rule"), and it is due again the rule's time from now.
-- watch    pairs (field, silence µs): a device a rule watches is due the rule's time from now
--          unless it is due already or alarmed (a device never heard from is silent from when it is
--          first watched).
-- unwatch  pairs (field, by): no longer watched: not due, its alarm cleared (by "unwatched", "rule
--          removed").
-- raise    triples (field, due µs as read, raising event): the alarm is raised if the field is
--          still due then, and that is now or earlier.
-- confirm  entries produced to Kafka: taken off the pending list.
-- due      returns the fields due now or earlier, with their times (ARGV[4] of them at most, from
--          the ARGV[3]th on), and the pending list's length.
-- fields   returns every field due and every field alarmed.
-- pending  returns the pending list.
local verb, now = ARGV[1], tonumber(ARGV[2])

local function clear(field, by)
  local raised = redis.call('HGET', KEYS[2], field)
  if raised then
    redis.call('HDEL', KEYS[2], field)
    redis.call('RPUSH', KEYS[3], 'cleared|' .. ARGV[2] .. '|' .. by .. '|' .. raised)
  end
end

if verb == 'seen' then
  for i = 3, #ARGV, 2 do
    clear(ARGV[i], 'rule')
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[i + 1]), ARGV[i])
  end
elseif verb == 'watch' then
  for i = 3, #ARGV, 2 do
    if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
      redis.call('ZADD', KEYS[1], 'NX', now + tonumber(ARGV[i + 1]), ARGV[i])
    end
  end
elseif verb == 'unwatch' then
  for i = 3, #ARGV, 2 do
    redis.call('ZREM', KEYS[1], ARGV[i])
    clear(ARGV[i], ARGV[i + 1])
  end
elseif verb == 'raise' then
  for i = 3, #ARGV, 3 do
    local due = redis.call('ZSCORE', KEYS[1], ARGV[i])
    if due and tonumber(due) == tonumber(ARGV[i + 1]) and tonumber(due) <= now then
      redis.call('ZREM', KEYS[1], ARGV[i])
      redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
      redis.call('RPUSH', KEYS[3], ARGV[i + 2])
    end
  end
elseif verb == 'confirm' then
  for i = 3, #ARGV do
    -- From the head, where produced entries are (each is once on the list): a short scan each.
    redis.call('LREM', KEYS[3], 1, ARGV[i])
  end
elseif verb == 'due' then
  return {
    redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', ARGV[3], ARGV[4]),
    redis.call('LLEN', KEYS[3]),
  }
elseif verb == 'fields' then
  return {redis.call('ZRANGE', KEYS[1], 0, -1), redis.call('HKEYS', KEYS[2])}
elseif verb == 'pending' then
  return redis.call('LRANGE', KEYS[3], 0, -1)
end
return redis.call('LLEN', KEYS[3])
