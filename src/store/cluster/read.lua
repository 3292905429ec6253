-- One page of a user's queue after a cursor, up to its confirmed head.
-- KEYS[1] meta hash, KEYS[2] stream, KEYS[3] voided seqs (every key a
-- script touches is declared: during a slot migration Redis then redirects
-- the whole call instead of failing it half way)
-- ARGV[1] cursor, ARGV[2] most events, ARGV[3] epoch for a new queue,
-- ARGV[4] ms an idle queue is kept.
-- Returns {epoch, head, first retained seq (0: none), entries}.
local meta, stream, void = KEYS[1], KEYS[2], KEYS[3]
local state = redis.call('HMGET', meta, 'e', 'c', 'v')
local epoch = state[1]
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', meta, 'e', epoch, 's', 0, 'c', 0)
  redis.call('DEL', stream, void)
  redis.call('PEXPIRE', meta, ARGV[4])
  state = {epoch, '0', false}
end
local head = tonumber(state[2] or '0')
local cursor = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local first = 0
local entries = {}
if cursor < head then
  -- Voided appends (no replica got them; `v` says there were some) are
  -- skipped.
  local voids = state[3] and redis.call('SCARD', void) > 0
  local from = '(' .. cursor .. '-0'
  while #entries < want do
    local asked = want - #entries
    local batch = redis.call('XRANGE', stream, from, head .. '-0', 'COUNT', asked)
    for _, entry in ipairs(batch) do
      if not voids or redis.call('SISMEMBER', void, string.match(entry[1], '^%d+')) == 0 then
        entries[#entries + 1] = entry
      end
    end
    -- A short batch reached the head: no second XRANGE to find nothing.
    if #batch < asked then break end
    from = '(' .. batch[#batch][1]
  end
  -- The oldest retained seq matters only when the page does not start
  -- right after the cursor (a gap, or voided seqs).
  local next = entries[1] and tonumber(string.match(entries[1][1], '^%d+'))
  if next == cursor + 1 then
    first = next
  else
    local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
    if oldest[1] then first = tonumber(string.match(oldest[1][1], '^%d+')) end
  end
end
return {epoch, head, first, entries}
