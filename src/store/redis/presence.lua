-- Presence across nodes. Per user, h:{u:UID}:on maps each node that has
-- the user online to a deadline (ms, Redis's clock); h:alive ranks users by
-- their latest deadline; h:status holds chosen statuses other than online;
-- h:shown the visible status last pushed to reverse friends, so that of
-- all nodes exactly one pushes each change.
-- KEYS[1] h:alive, KEYS[2] h:status, KEYS[3] h:shown, KEYS[4] the name of
-- a user's h:{u:UID}:on with `*` for the uid (a Redis Cluster's partition
-- keeps its users' keys under its own hash tag); on a Redis Cluster the
-- `on` keys of the uids named are declared after it too (so that a slot
-- migration redirects the call instead of failing it half way).
-- ARGV[1] operation: 'set' (then uid, node, 'on'|'off'|'keep', lease ms,
-- chosen status or ''), 'refresh' (node, lease ms, uids...), 'states'
-- (uids...), 'leases' (uid: the nodes with a live lease on it), 'online',
-- 'sweep' (most users).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local on_before, on_after = string.match(KEYS[4], '^(.*)%*(.*)$')
local function on_key(uid) return on_before .. uid .. on_after end

-- Whether uid is online on any live node (dropping dead nodes' entries).
local function alive(uid)
  local key = on_key(uid)
  -- A key the sweep did not declare may be migrating away: no change.
  local entries = redis.pcall('HGETALL', key)
  if entries.err then return redis.call('ZSCORE', KEYS[1], uid) ~= false end
  local best = 0
  for i = 1, #entries, 2 do
    local deadline = tonumber(entries[i + 1])
    if deadline > now then
      if deadline > best then best = deadline end
    else
      redis.call('HDEL', key, entries[i])
    end
  end
  if best > 0 then
    redis.call('ZADD', KEYS[1], best, uid)
  else
    redis.call('ZREM', KEYS[1], uid)
  end
  return best > 0
end

local function visible(uid, online)
  if not online then return 'offline' end
  local chosen = redis.call('HGET', KEYS[2], uid)
  if chosen == 'invisible' then return 'offline' end
  return chosen or 'online'
end

-- The visible status of uid if it differs from the one last shown.
local function changed(uid)
  local now_visible = visible(uid, alive(uid))
  local shown = redis.call('HGET', KEYS[3], uid) or 'offline'
  if shown == now_visible then return false end
  if now_visible == 'offline' then
    redis.call('HDEL', KEYS[3], uid)
  else
    redis.call('HSET', KEYS[3], uid, now_visible)
  end
  return now_visible
end

local op = ARGV[1]
if op == 'set' then
  local uid, node, state, lease, chosen = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
  local key = on_key(uid)
  if state == 'on' then
    redis.call('HSET', key, node, now + lease)
    redis.call('PEXPIRE', key, lease * 2)
  elseif state == 'off' then
    redis.call('HDEL', key, node)
  end
  if chosen == 'online' then
    redis.call('HDEL', KEYS[2], uid)
  elseif chosen ~= '' then
    redis.call('HSET', KEYS[2], uid, chosen)
  end
  local status = changed(uid)
  if status then return {1, status} end
  return {0, visible(uid, alive(uid))}
elseif op == 'refresh' then
  local node, lease = ARGV[2], tonumber(ARGV[3])
  for i = 4, #ARGV do
    local key = on_key(ARGV[i])
    redis.call('HSET', key, node, now + lease)
    redis.call('PEXPIRE', key, lease * 2)
    redis.call('ZADD', KEYS[1], 'GT', now + lease, ARGV[i])
  end
  return #ARGV - 3
elseif op == 'states' then
  local out = {}
  for i = 2, #ARGV do
    local online = false
    local entries = redis.call('HGETALL', on_key(ARGV[i]))
    for j = 2, #entries, 2 do
      if tonumber(entries[j]) > now then online = true end
    end
    out[#out + 1] = online and 1 or 0
    out[#out + 1] = redis.call('HGET', KEYS[2], ARGV[i]) or ''
  end
  return out
elseif op == 'leases' then
  local out = {}
  local entries = redis.call('HGETALL', on_key(ARGV[2]))
  for j = 1, #entries, 2 do
    if tonumber(entries[j + 1]) > now then out[#out + 1] = entries[j] end
  end
  return out
elseif op == 'online' then
  return redis.call('ZRANGE', KEYS[1], now, '+inf', 'BYSCORE')
elseif op == 'sweep' then
  -- Users whose every node stopped refreshing them (killed): each change
  -- is returned to exactly one caller, which pushes it.
  local due = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, ARGV[2])
  local out = {}
  for _, uid in ipairs(due) do
    local status = changed(uid)
    if status then
      out[#out + 1] = uid
      out[#out + 1] = status
    end
  end
  return out
end
return redis.error_reply('unknown presence operation ' .. op)
