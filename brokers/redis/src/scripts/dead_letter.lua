-- Moves a pending entry to the dead-letter stream with a reason, if it is still pending.
-- KEYS[1] stream   KEYS[2] dead-letter stream
-- ARGV[1] group   ARGV[2] entry id   ARGV[3] payload   ARGV[4] reason   ARGV[5] now (ms)
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
  redis.call('XADD', KEYS[2], '*', 'p', ARGV[3], 'reason', ARGV[4], 'at', ARGV[5])
  return 1
end
return 0
