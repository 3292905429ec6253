-- One page of a user's queue after a cursor.
-- KEYS[1] meta hash, KEYS[2] stream
-- ARGV[1] cursor, ARGV[2] most events, ARGV[3] epoch for a new queue,
-- ARGV[4] ms an idle queue is kept.
-- Returns {epoch, head, first retained seq (0: none), entries}.
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
  redis.call('DEL', KEYS[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local head = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local cursor = tonumber(ARGV[1])
local first = 0
local entries = {}
if cursor < head then
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if oldest[1] then first = tonumber(string.match(oldest[1][1], '^%d+')) end
  entries = redis.call('XRANGE', KEYS[2], '(' .. cursor .. '-0', '+', 'COUNT', ARGV[2])
end
return {epoch, head, first, entries}
