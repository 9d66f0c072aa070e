-- Records that a chord's member failed for good; says whether it is the chord's first failure.
-- KEYS[1]: the chord's "failed by" key
-- ARGV[1]: the member's index, ARGV[2]: how long to keep it, in milliseconds
-- Returns 1 to the first failing member (and to a repeat of its run), 0 to the others.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 0
