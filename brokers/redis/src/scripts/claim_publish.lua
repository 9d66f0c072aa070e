-- Publishes a message only if its claim is free, claiming it: a unique task's send in one step.
-- KEYS[1]: the claim; KEYS[2]: the queue's ready stream (ARGV[3] = 'x') or delayed set ('z').
-- ARGV[1]: the holder; ARGV[2]: the claim's expiry in milliseconds; ARGV[3]: 'x' or 'z';
-- ARGV[4]: the payload (stream) or member (delayed set); ARGV[5]: the member's score (delayed).
-- Returns {1, '', 0} if claimed and published, else {0, holder, milliseconds left}.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if ARGV[3] == 'x' then
    redis.call('XADD', KEYS[2], '*', 'p', ARGV[4])
  else
    redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
  end
  return {1, '', 0}
end
return {0, redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
