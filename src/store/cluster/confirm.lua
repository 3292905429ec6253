-- Makes a part's appends visible once a replica has them ('confirm'), or
-- voids them when none got them in time ('void').
-- KEYS[1] the part's token (see append.lua), then per user: its meta
-- hash, stream and voided seqs. ARGV[1] 'confirm' or 'void', ARGV[2] the
-- partition's wake channel, ARGV[3] ms an idle queue is kept, then per
-- user: uid, seq.
-- Readers see a queue up to its `c`, never beyond. A primary replicates in
-- order: once a replica acknowledged an append, it has every earlier
-- append of that primary too; so raising `c` to a confirmed seq shows
-- nothing a replica lacks. Returns 1 when the appends are visible, 0 when
-- they were voided: taken back if still the newest of their queue (no seq
-- is lost), else skipped by readers (the seqs in the user's `v` set).
local users = (#KEYS - 1) / 3
local function meta(i) return KEYS[3 * i - 1] end
local function confirm()
  for i = 1, users do
    local state = redis.call('HMGET', meta(i), 'e', 'c')
    if state[1] then
      local seq = tonumber(ARGV[3 + 2 * i])
      local c = tonumber(state[2] or '0')
      if seq > c then
        redis.call('HSET', meta(i), 'c', seq)
        c = seq
      end
      -- See append.lua: a wake lost to a migration is made up for.
      redis.pcall('SPUBLISH', ARGV[2], ARGV[2 + 2 * i] .. ' ' .. c)
    end
  end
  return 1
end
if ARGV[1] == 'confirm' then return confirm() end
-- A later append confirmed meanwhile proves a replica has these too.
for i = 1, users do
  local c = tonumber(redis.call('HGET', meta(i), 'c') or '0')
  if tonumber(ARGV[3 + 2 * i]) <= c then return confirm() end
end
for i = 1, users do
  local seq = ARGV[3 + 2 * i]
  local stream, void = KEYS[3 * i], KEYS[3 * i + 1]
  if redis.call('HGET', meta(i), 's') == seq then
    local before = tonumber(seq) - 1
    redis.call('XDEL', stream, seq .. '-0')
    -- The stream's last id goes back too, so that the seq can be given again.
    redis.call('XSETID', stream, before > 0 and (before .. '-0') or '0-1')
    redis.call('HSET', meta(i), 's', before)
  else
    redis.call('SADD', void, seq)
    redis.call('PEXPIRE', void, ARGV[3])
    redis.call('HSET', meta(i), 'v', 1)
  end
end
-- Voided: a retry of the same part must append anew, not find its seqs.
redis.call('DEL', KEYS[1])
return 0
