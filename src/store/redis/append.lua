-- Appends one event to each of several users' queues, atomically.
-- KEYS: per user, its meta hash and its stream (2 keys per user).
-- ARGV[1] epoch for a queue that has none (new, or its data was lost)
-- ARGV[2] ms an idle queue is kept (PEXPIRE of both keys)
-- ARGV[3] idempotency key ('' for none), ARGV[4] its tag, ARGV[5] its ttl ms
-- then per user: wake channel, uid, most events kept (MAXLEN ~), event
-- JSON after its seq.
-- Returns the seqs, or {-1, tag, seqs...} when the idempotency key was
-- used before (the key keeps "tag,seq,seq,...": the first call's answer).
if ARGV[3] ~= '' then
  local first = redis.call('GET', ARGV[3])
  if first then
    local out = {-1}
    for n in string.gmatch(first, '%d+') do out[#out + 1] = tonumber(n) end
    return out
  end
end
local kept_for = tonumber(ARGV[2])
local renew_below = kept_for - math.min(60000, math.floor(kept_for / 2))
local seqs = {}
local users = #KEYS / 2
for i = 1, users do
  local meta, stream = KEYS[2 * i - 1], KEYS[2 * i]
  local at = 5 + 4 * (i - 1)
  local seq = redis.call('HINCRBY', meta, 's', 1)
  if seq == 1 and redis.call('HSETNX', meta, 'e', ARGV[1]) == 1 then
    -- No meta: a new queue, or one whose meta was lost. Seqs restart at 1
    -- under a new epoch, so nothing older may stay readable.
    redis.call('DEL', stream)
  end
  redis.call('XADD', stream, 'MAXLEN', '~', ARGV[at + 3], seq .. '-0', 'j', '{"seq":' .. seq .. ARGV[at + 4])
  -- An idle queue expires ARGV[2] after its last append: renewed at most
  -- once a minute (one PTTL instead of two PEXPIREs on a busy queue; a
  -- stream XADD just created has none, so both get one).
  if redis.call('PTTL', stream) < renew_below then
    redis.call('PEXPIRE', meta, ARGV[2])
    redis.call('PEXPIRE', stream, ARGV[2])
  end
  redis.call('PUBLISH', ARGV[at + 1], ARGV[at + 2] .. ' ' .. seq)
  seqs[i] = seq
end
if ARGV[3] ~= '' then
  redis.call('SET', ARGV[3], ARGV[4] .. ',' .. table.concat(seqs, ','), 'PX', ARGV[5])
end
return seqs
