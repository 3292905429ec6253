-- The claim of a write that spans partitions: an idempotency key, or an
-- atomic append. Its parts are appended each under a token derived from
-- the claim, so driving the same claim again appends nothing twice; a
-- claim left open (its node died) is driven to the end by the upkeep.
-- KEYS[1] the claim, KEYS[2] the partition's index of open claims.
-- ARGV[1] operation:
--   'claim' (payload, ttl ms, now ms): the value held ('P' payload: open,
--     'D' answer: done), or nil when this call claimed it;
--   'finish' (answer, '1' to delete the claim instead);
--   'drop': forgets the claim (nothing of it is visible);
--   'due' (before ms, most): the open claims older than that, with values.
local op = ARGV[1]
if op == 'claim' then
  local held = redis.call('GET', KEYS[1])
  if held then return held end
  redis.call('SET', KEYS[1], 'P' .. ARGV[2], 'PX', ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
  return false
elseif op == 'finish' then
  if ARGV[3] == '1' then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], 'D' .. ARGV[2], 'KEEPTTL')
  end
  redis.call('ZREM', KEYS[2], KEYS[1])
  return 1
elseif op == 'drop' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], KEYS[1])
  return 1
elseif op == 'due' then
  local keys = redis.call('ZRANGE', KEYS[2], '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, ARGV[3])
  local out = {}
  for _, key in ipairs(keys) do
    local value = redis.call('GET', key)
    if value and string.sub(value, 1, 1) == 'P' then
      out[#out + 1] = key
      out[#out + 1] = value
    else
      redis.call('ZREM', KEYS[2], key)
    end
  end
  return out
end
return redis.error_reply('unknown claim operation ' .. op)
