-- Removes a consumer from the group once it owns no pending entry (deleting a consumer drops its
-- pending entries, so one that still owns any is kept: another consumer will reclaim them).
-- KEYS[1] stream   ARGV[1] group   ARGV[2] consumer
local owned = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #owned == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
