-- Counts of one queue: ready, delayed, unacked, dead-lettered.
-- KEYS[1] stream   KEYS[2] delayed sorted set   KEYS[3] dead-letter stream   ARGV[1] group
local delayed = redis.call('ZCARD', KEYS[2])
local dead = redis.call('XLEN', KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, delayed, 0, dead}
end
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0')
local length = redis.call('XLEN', KEYS[1])
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])[1]
return {length - pending, delayed, pending, dead}
