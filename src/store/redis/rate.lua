-- A shared token bucket (GCRA) on Redis's clock.
-- KEYS[1] the bucket; ARGV[1] ms per token, ARGV[2] burst (tokens),
-- ARGV[3] tokens to take. Returns 0 if taken, else the ms to wait; with
-- ARGV[4] = 'left', takes nothing and returns the tokens left.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
if ARGV[4] == 'left' then
  return math.max(0, burst - math.ceil((tat - now) / interval))
end
local new_tat = tat + interval * n
local wait = new_tat - interval * burst - now
if wait > 0 then return math.ceil(wait) end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return 0
