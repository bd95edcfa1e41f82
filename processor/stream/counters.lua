-- The counter script: one round of readings applied to their sensors' counters and alarms
-- (processor/stream/counters.py loads it; its docstring says what the keys hold).
--
-- KEYS: five per sensor, in the order of `sensor_keys` (on a cluster, sensors of one hash slot).
-- ARGV: the round's detect time (µs), "1" if a call that changed nothing must still write (a no-op
-- push and pop: the caller waits for replicas), then per reading and rule, (sensor id, rule field,
-- spec, time in µs, event). The spec is N, or 0 for a reading that does not meet the rule's
-- condition; "N/D" and "0/D" for a rule whose condition must hold D µs; "N/D/M/<value>" and
-- "0/D/M/<value>" for a rule with alarms cleared by M readings in a row (D = 0: no duration).
-- Returns the pending entries of the declared sensors that have any, as {position of the sensor's
-- first key, {entries}}.

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
