-- Appends one event to each of several users' queues of ONE partition.
-- KEYS[1] the part's token (a retry of the same part appends nothing
-- again), then per user: its meta hash, its stream and its voided seqs
-- (every key touched is declared, see read.lua).
-- ARGV[1] epoch for a queue that has none, ARGV[2] ms an idle queue is
-- kept, ARGV[3] ms the token is kept, ARGV[4] '1' to make the events
-- visible at once (no replica to wait for: see confirm.lua), ARGV[5] the
-- partition's wake channel, then per user: uid, most events kept (MAXLEN
-- ~), event JSON after its seq. ARGV[6] how many replicas must be in sync
-- for an append to be tried at all (nothing is written otherwise, so that
-- a primary without its replica refuses at once instead of voiding).
-- Returns the seqs, the first call's when the token was used before.
local done = redis.call('GET', KEYS[1])
if done then
  -- A write, so that a WAIT after it also covers the first call's appends.
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  local out = {}
  for n in string.gmatch(done, '%d+') do out[#out + 1] = tonumber(n) end
  return out
end
local needed = tonumber(ARGV[6])
if needed > 0 then
  local in_sync = 0
  -- (lag is -1 when an ack came in the second Redis's clock just turned)
  for lag in string.gmatch(redis.call('INFO', 'replication'), 'state=online,offset=%d+,lag=(%-?%d+)') do
    -- As Redis's own min-replicas-max-lag (10 s): a replica that acked
    -- lately; one frozen since is caught by the WAIT after the append.
    if tonumber(lag) <= 10 then in_sync = in_sync + 1 end
  end
  if in_sync < needed then
    return redis.error_reply('NOREPLICAS ' .. in_sync .. ' of ' .. needed .. ' replicas in sync')
  end
end
local kept_for = tonumber(ARGV[2])
local renew_below = kept_for - math.min(60000, math.floor(kept_for / 2))
local seqs = {}
for i = 1, (#KEYS - 1) / 3 do
  local meta, stream, void = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1]
  local at = 6 + 3 * (i - 1)
  local seq = redis.call('HINCRBY', meta, 's', 1)
  if seq == 1 and redis.call('HSETNX', meta, 'e', ARGV[1]) == 1 then
    -- No meta: a new queue, or one whose meta was lost. Seqs restart at 1
    -- under a new epoch, so nothing older may stay readable.
    redis.call('DEL', stream, void)
    redis.call('HSET', meta, 'c', 0)
  end
  redis.call('XADD', stream, 'MAXLEN', '~', ARGV[at + 2], seq .. '-0', 'j', '{"seq":' .. seq .. ARGV[at + 3])
  -- An idle queue expires ARGV[2] after its last append: renewed at most
  -- once a minute (one PTTL instead of two PEXPIREs on a busy queue; a
  -- stream XADD just created has none, so both get one).
  if redis.call('PTTL', stream) < renew_below then
    redis.call('PEXPIRE', meta, ARGV[2])
    redis.call('PEXPIRE', stream, ARGV[2])
  end
  if ARGV[4] == '1' then
    redis.call('HSET', meta, 'c', seq)
    -- A wake lost (its slot migrating) is made up for when the channel
    -- moves: every node then re-reads its waiters.
    redis.pcall('SPUBLISH', ARGV[5], ARGV[at + 1] .. ' ' .. seq)
  end
  seqs[i] = seq
end
redis.call('SET', KEYS[1], table.concat(seqs, ','), 'PX', ARGV[3])
return seqs
