-- The records of the chat features: values in one hash, their keys in a
-- sorted set (all scores 0) for ordered prefix ranges.
-- KEYS[1] values hash, KEYS[2] key index, KEYS[3] deadlines
-- ARGV[1] operation, then its arguments.
-- Each of `keys` with its value: key, value, key, value, ...
local function with_values(keys)
  local out = {}
  for i, key in ipairs(keys) do
    out[2 * i - 1] = key
    out[2 * i] = redis.call('HGET', KEYS[1], key) or ''
  end
  return out
end

local op = ARGV[1]
if op == 'put' then
  -- pairs: key, value, key, value, ...
  for i = 2, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[2], 0, ARGV[i])
  end
  return 1
elseif op == 'del' then
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
elseif op == 'swap' then
  -- key, expected ('' flag in ARGV[3]: '0' absent, '1' present), new
  local current = redis.call('HGET', KEYS[1], ARGV[2])
  if ARGV[3] == '0' then
    if current then return 0 end
  elseif current ~= ARGV[4] then
    return 0
  end
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[5])
  redis.call('ZADD', KEYS[2], 0, ARGV[2])
  return 1
elseif op == 'raise' then
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0') or 0
  local value = tonumber(ARGV[3])
  if value > current then
    redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
    redis.call('ZADD', KEYS[2], 0, ARGV[2])
    return ARGV[3]
  end
  return tostring(current)
elseif op == 'range' then
  -- prefix, start ('[' or '(' bound), limit; returns key, value, ...
  return with_values(redis.call('ZRANGE', KEYS[2], ARGV[3], '[' .. ARGV[2] .. '\255', 'BYLEX', 'LIMIT', 0, ARGV[4]))
elseif op == 'back' then
  -- prefix, end ('[' or '(' bound), limit; greatest key first
  return with_values(redis.call('ZRANGE', KEYS[2], ARGV[3], '[' .. ARGV[2], 'BYLEX', 'REV', 'LIMIT', 0, ARGV[4]))
elseif op == 'expire_due' then
  -- now, most keys: removes the records whose deadline passed
  local due = redis.call('ZRANGE', KEYS[3], '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, ARGV[3])
  for _, key in ipairs(due) do
    redis.call('HDEL', KEYS[1], key)
    redis.call('ZREM', KEYS[2], key)
    redis.call('ZREM', KEYS[3], key)
  end
  return #due
end
return redis.error_reply('unknown kv operation ' .. op)
