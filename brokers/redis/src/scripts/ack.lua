-- Acknowledges and deletes entries (a batch of acks from one consumer).
-- KEYS[1] stream   ARGV[1] group   ARGV[2..] entry ids
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
return acked
