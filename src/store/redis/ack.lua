-- Raises a user's acked seq, never beyond the head.
-- KEYS[1] meta hash; ARGV[1] seq, ARGV[2] the field of the head readers
-- see ('s'; 'c' on a Redis Cluster). Returns {before, after, head}.
local state = redis.call('HMGET', KEYS[1], ARGV[2] or 's', 'a')
local head = tonumber(state[1] or '0')
local before = tonumber(state[2] or '0')
local seq = tonumber(ARGV[1])
if seq > before and seq <= head then
  redis.call('HSET', KEYS[1], 'a', seq)
  return {before, seq, head}
end
return {before, before, head}
