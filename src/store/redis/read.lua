-- One page of a user's queue after a cursor.
-- KEYS[1] meta hash, KEYS[2] stream
-- ARGV[1] cursor, ARGV[2] most events, ARGV[3] epoch for a new queue,
-- ARGV[4] ms an idle queue is kept.
-- Returns {epoch, head, first retained seq (0: none), entries}.
local state = redis.call('HMGET', KEYS[1], 'e', 's')
local epoch = state[1]
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
  redis.call('DEL', KEYS[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  state = {epoch, '0'}
end
local head = tonumber(state[2] or '0')
local cursor = tonumber(ARGV[1])
local first = 0
local entries = {}
if cursor < head then
  entries = redis.call('XRANGE', KEYS[2], '(' .. cursor .. '-0', '+', 'COUNT', ARGV[2])
  -- The oldest retained seq matters only when the page does not start
  -- right after the cursor (a gap).
  local next = entries[1] and tonumber(string.match(entries[1][1], '^%d+'))
  if next == cursor + 1 then
    first = next
  else
    local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
    if oldest[1] then first = tonumber(string.match(oldest[1][1], '^%d+')) end
  end
end
return {epoch, head, first, entries}
