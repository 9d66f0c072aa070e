-- Records one chord member's output and says whether the caller sends the chord's callback.
-- KEYS[1]: the chord's members hash (member index -> output), KEYS[2]: its "callback sent" flag
-- ARGV[1]: the member's index, ARGV[2]: its output, ARGV[3]: the chord's size,
-- ARGV[4]: how long to keep the join, in milliseconds
-- Returns every member's index and output (HGETALL) to the caller that sends the callback, nil to
-- the others.
--
-- A member recorded twice (a run repeated after a crash) keeps its first output and counts once.
-- The write that records the last member sends the callback; so does a repeated member's write
-- while the callback is not marked sent (its first sender may have died before sending).
local added = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then
  return false
end
if added == 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  return false
end
return redis.call('HGETALL', KEYS[1])
