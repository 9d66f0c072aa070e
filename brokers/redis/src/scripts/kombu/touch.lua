-- Renews the delivery time of held messages in unacked_index (only of those still there), so
-- that no restore sweep takes a message that is still being worked on.
--
-- KEYS[1] unacked_index. ARGV[1] now, ARGV[2..] delivery tags.
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[1], ARGV[i])
end
return renewed
