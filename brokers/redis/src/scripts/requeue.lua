-- Puts a pending entry back at the end of the stream, marked redelivered, if it is still pending
-- (otherwise another consumer took it over and nothing must be duplicated).
-- KEYS[1] stream   ARGV[1] group   ARGV[2] entry id   ARGV[3] payload
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
  redis.call('XADD', KEYS[1], '*', 'p', ARGV[3], 'r', '1')
  return 1
end
return 0
