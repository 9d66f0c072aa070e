-- Moves delayed messages whose time has come to the ready stream, atomically: any number of
-- consumers may run this at once and each message is moved exactly once.
-- KEYS[1] delayed sorted set (score = due time, ms)   KEYS[2] ready stream
-- ARGV[1] now (ms)   ARGV[2] most messages to move
-- Members are 16 bytes of unique id followed by the payload.
-- Returns the next due time in ms, or -1 when nothing is delayed.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'p', string.sub(member, 17))
  redis.call('ZREM', KEYS[1], member)
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if next_due[2] then
  return tonumber(next_due[2])
end
return -1
