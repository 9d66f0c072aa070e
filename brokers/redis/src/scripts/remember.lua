-- Adds a member to a set whose members lapse: a sorted set scored by when each lapses, on Redis's
-- own clock. Lapsed members are dropped; beyond the cap, the ones that lapse first go.
-- KEYS[1]: the set. ARGV[1]: the member; ARGV[2]: how long to keep it, in milliseconds;
-- ARGV[3]: the most members the set holds.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local keep_for = tonumber(ARGV[2])
local until_ms = now + keep_for
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if current and tonumber(current) > until_ms then
  until_ms = tonumber(current)
end
redis.call('ZADD', KEYS[1], until_ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if over > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], tonumber(last[2]))
return redis.status_reply('OK')
