-- Puts an unacknowledged message back, once: only the caller that removes its entry from
-- `unacked` pushes it, so two restorers (a sweep and a dropped delivery, or a Python worker) never
-- both do.
--
-- KEYS[1] unacked, KEYS[2] unacked_index, KEYS[3..] the lists to push it to.
-- ARGV[1] delivery tag, ARGV[2] the message as restored, ARGV[3] 'head' (RPUSH: served next) or
-- 'tail' (LPUSH: served after the messages waiting).
--
-- Returns 1 if restored, 0 if the entry was gone (acknowledged or restored already).
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
local push = ARGV[3] == 'head' and 'RPUSH' or 'LPUSH'
for i = 3, #KEYS do
  redis.call(push, KEYS[i], ARGV[2])
end
return 1
