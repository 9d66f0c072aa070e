-- Joins a chord member's outcome in the keys of Celery's Redis result backend (Celery 5.7), so that
-- members run by Python and by Rust workers count together and the callback is sent once.
--
-- KEYS[1] <group>.j  sorted set of '[1, "<task id>", "<STATE>", <result>]', scored by group index
-- KEYS[2] <group>.t  how many members were added to the chord after it was sent (may be absent)
-- KEYS[3] <group>.s  the chord's size, written by its sender (absent until then)
-- KEYS[4] <group>.d  '<task id>:<index>' of each member recorded: a repeated run counts once
-- KEYS[5] <group>.c  the claim on sending the callback; 'done' once it was sent
-- ARGV: task id, entry, group index, expiry of the keys (s), how long a claim holds (s)
--
-- Returns {'over'} when the callback was sent already, {'waiting'}, or {'complete', entries...}
-- (in group order) to the one caller that claimed the callback. A claim lapses, so the repeat of a
-- member whose claimant died before sending claims it again.
local joined, delta, size_key, seen, claim = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('GET', claim) == 'done' then
  return {'over'}
end
local member = ARGV[1] .. ':' .. ARGV[3]
if redis.call('SISMEMBER', seen, member) == 0 then
  redis.call('ZADD', joined, ARGV[3], ARGV[2])
  redis.call('SADD', seen, member)
end
local expires = tonumber(ARGV[4])
for _, key in ipairs({joined, delta, size_key, seen}) do
  redis.call('EXPIRE', key, expires)
end
local size = redis.call('GET', size_key)
if not size then
  return {'waiting'}
end
local total = tonumber(size) + tonumber(redis.call('GET', delta) or '0')
if redis.call('ZCOUNT', joined, '-inf', '+inf') < total then
  return {'waiting'}
end
if not redis.call('SET', claim, 'celeriac', 'NX', 'EX', ARGV[5]) then
  return {'waiting'}
end
local complete = redis.call('ZRANGE', joined, 0, -1)
table.insert(complete, 1, 'complete')
return complete
