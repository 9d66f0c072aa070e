-- Moves an unacknowledged message to a dead-letter list, once.
--
-- KEYS[1] unacked, KEYS[2] unacked_index, KEYS[3] the dead-letter list.
-- ARGV[1] delivery tag, ARGV[2] the dead-letter record.
--
-- Returns 1 if moved, 0 if the entry was gone (its lease was lost and it was restored).
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[2])
return 1
