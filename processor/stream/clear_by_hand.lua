-- Ends an active alarm by hand if it is still the one read (ARGV[1]): its counter starts afresh,
-- and the event of its clearing (ARGV[2]) is stored to be produced. ARGV[3]: the rule's field.
-- KEYS: the sensor's alarms, warnings, warning-since and pending keys (one hash slot).
if redis.call('HGET', KEYS[1], ARGV[3]) ~= ARGV[1] then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[3], 0)
redis.call('HDEL', KEYS[3], ARGV[3])
redis.call('RPUSH', KEYS[4], ARGV[2])
return 1
