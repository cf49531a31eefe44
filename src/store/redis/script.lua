-- orproxy's shared state updates (issue 8), each one atomic. Called with
-- EVALSHA by src/store/redis/script.rs; the layout is described in
-- layout.rs. ARGV[1] is the events channel, ARGV[2] the calling instance,
-- ARGV[3] the operation, ARGV[4] the time in milliseconds; the rest depends
-- on the operation. A key that no longer exists (removed meanwhile) is
-- never recreated.
local channel, origin, op, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

local function num(hash, field)
  return tonumber(redis.call('HGET', hash, field) or '0') or 0
end

-- Tell every instance the key's new state; return it. `v` orders the
-- key's states, so that an instance never adopts an older state over a
-- newer one that reached it first: it grows with every change and is at
-- least the server's time in microseconds, so it keeps growing even after
-- a Redis that lost its data was refilled from an instance's memory.
local function publish(hash, id)
  local t = redis.call('TIME')
  local v = math.max(num(hash, 'v') + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('HSET', hash, 'v', string.format('%.0f', v))
  local s = redis.call('HGETALL', hash)
  redis.call('PUBLISH', channel, cjson.encode({o = origin, k = id, s = s}))
  return s
end

local function flag(hash, field, on)
  if on then
    redis.call('HSET', hash, field, '1')
  else
    redis.call('HDEL', hash, field)
  end
end

local function disable(hash, reason, recoverable, rejected)
  if redis.call('HGET', hash, 'disabled') == '1' then return false end
  redis.call('HSET', hash, 'disabled', '1', 'disabled_reason', reason)
  flag(hash, 'auto_recover', recoverable)
  flag(hash, 'rejected', rejected)
  -- The answer that disabled it counts as its last check.
  redis.call('HSET', hash, 'last_probe', ARGV[4])
  return true
end

local out = {}
local function changed(hash, id)
  out[#out + 1] = id
  out[#out + 1] = publish(hash, id)
end

if op == 'park' then
  -- KEYS: the keys' hashes; ARGV[5] until, [6] reason, [7] free only, [8..] IDs.
  local until_ms = tonumber(ARGV[5])
  local f_until, f_reason = 'cooldown_until', 'cooldown_reason'
  if ARGV[7] == '1' then f_until, f_reason = 'free_cooldown_until', 'free_cooldown_reason' end
  for i, hash in ipairs(KEYS) do
    if redis.call('EXISTS', hash) == 1 and redis.call('HGET', hash, 'disabled') ~= '1'
        and until_ms > now and until_ms > num(hash, f_until) then
      redis.call('HSET', hash, f_until, ARGV[5], f_reason, ARGV[6])
      changed(hash, ARGV[7 + i])
    end
  end
elseif op == 'fail' then
  -- ARGV[5] ID, [6] what follows the count in the disabled reason, [7] failures that disable.
  local hash = KEYS[1]
  if redis.call('EXISTS', hash) == 1 then
    local n = redis.call('HINCRBY', hash, 'consecutive_failures', 1)
    redis.call('HINCRBY', hash, 'failures_total', 1)
    if n >= tonumber(ARGV[7]) then
      disable(hash, n .. ARGV[6], true, false)
    end
    changed(hash, ARGV[5])
  end
elseif op == 'disable' then
  -- ARGV[5] ID, [6] reason, [7] recoverable, [8] rejected by OpenRouter.
  local hash = KEYS[1]
  if redis.call('EXISTS', hash) == 1 and disable(hash, ARGV[6], ARGV[7] == '1', ARGV[8] == '1') then
    changed(hash, ARGV[5])
  end
elseif op == 'count' then
  -- ARGV[5] ID, [6] successes, [7] last used (0: none), [8] reset the failure streak.
  local hash = KEYS[1]
  if redis.call('EXISTS', hash) == 1 then
    local n = tonumber(ARGV[6])
    if n > 0 then redis.call('HINCRBY', hash, 'requests_total', n) end
    local used = tonumber(ARGV[7])
    if used > 0 and used > num(hash, 'last_used') then
      redis.call('HSET', hash, 'last_used', ARGV[7])
    end
    if ARGV[8] == '1' and num(hash, 'consecutive_failures') > 0 then
      redis.call('HDEL', hash, 'consecutive_failures')
      changed(hash, ARGV[5])
    end
  end
elseif op == 'probe_mark' then
  -- ARGV[5] ID: a disabled key is being re-checked now.
  local hash = KEYS[1]
  if redis.call('HGET', hash, 'disabled') == '1' then
    redis.call('HSET', hash, 'last_probe', ARGV[4])
    changed(hash, ARGV[5])
  end
elseif op == 'probe_ok' then
  -- ARGV[5] ID: the re-check found the key healthy.
  local hash = KEYS[1]
  if redis.call('HGET', hash, 'disabled') == '1' then
    redis.call('HDEL', hash, 'disabled', 'disabled_reason', 'cooldown_until', 'cooldown_reason',
      'free_cooldown_until', 'free_cooldown_reason', 'consecutive_failures', 'auto_recover',
      'rejected')
    redis.call('HSET', hash, 'last_probe', ARGV[4])
    changed(hash, ARGV[5])
  end
elseif op == 'probe_invalid' then
  -- ARGV[5] ID, [6] reason: OpenRouter rejects the key: re-checked more rarely.
  local hash = KEYS[1]
  if redis.call('HGET', hash, 'disabled') == '1' then
    redis.call('HSET', hash, 'disabled_reason', ARGV[6], 'rejected', '1')
    changed(hash, ARGV[5])
  end
elseif op == 'model' then
  -- KEYS[1] the models hash; ARGV[5] model, [6] until.
  if tonumber(ARGV[6]) > num(KEYS[1], ARGV[5]) then
    redis.call('HSET', KEYS[1], ARGV[5], ARGV[6])
    redis.call('PUBLISH', channel, cjson.encode({o = origin, m = ARGV[5], u = tonumber(ARGV[6])}))
  end
  -- Forget back-offs that have ended (a handful of models at most).
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if (tonumber(all[i + 1]) or 0) <= now then redis.call('HDEL', KEYS[1], all[i]) end
  end
elseif op == 'cap' then
  -- KEYS[1] account hash, [2] accounts set; ARGV[5] account, [6] today,
  -- [7] daily limit or '', [8] the cap was hit, [9] the cap in force.
  local hash = KEYS[1]
  if ARGV[7] ~= '' then redis.call('HSET', hash, 'daily_limit', ARGV[7]) end
  if ARGV[8] == '1' then
    if redis.call('HGET', hash, 'day') ~= ARGV[6] then
      redis.call('HSET', hash, 'day', ARGV[6], 'free_requests', '0')
    end
    if num(hash, 'free_requests') < tonumber(ARGV[9]) then
      redis.call('HSET', hash, 'free_requests', ARGV[9])
    end
  end
  redis.call('SADD', KEYS[2], ARGV[5])
elseif op == 'reserve' then
  -- One free-model request for an account, if under both caps.
  -- KEYS[1] account hash, [2] its minute window, [3] accounts set;
  -- ARGV[5] account, [6] today, [7] daily cap, [8] per-minute cap, [9] a unique member.
  -- Returns {1, count today} or {0, 'day', count} or {0, 'minute', free again at (ms)}.
  local hash, window = KEYS[1], KEYS[2]
  if redis.call('HGET', hash, 'day') ~= ARGV[6] then
    redis.call('HSET', hash, 'day', ARGV[6], 'free_requests', '0')
    redis.call('SADD', KEYS[3], ARGV[5])
  end
  local count = num(hash, 'free_requests')
  local cap = tonumber(redis.call('HGET', hash, 'daily_limit') or ARGV[7])
  if count >= cap then return {0, 'day', count} end
  redis.call('ZREMRANGEBYSCORE', window, '-inf', now - 60000)
  local n = redis.call('ZCARD', window)
  local mcap = tonumber(ARGV[8])
  if n >= mcap then
    local first = redis.call('ZRANGE', window, n - mcap, n - mcap, 'WITHSCORES')
    return {0, 'minute', tonumber(first[2]) + 60000}
  end
  redis.call('HINCRBY', hash, 'free_requests', 1)
  redis.call('ZADD', window, now, ARGV[9])
  redis.call('PEXPIRE', window, 61000)
  redis.call('SADD', KEYS[3], ARGV[5])
  return {1, count + 1}
else
  return redis.error_reply('orproxy: unknown operation ' .. tostring(op))
end
return out
