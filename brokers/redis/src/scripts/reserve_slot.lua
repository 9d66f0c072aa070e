-- Reserves the next free slots of a rate limit whose slots are an interval apart, on Redis's clock.
-- KEYS[1]: the limit's key (its next free slot, in microseconds since the epoch)
-- ARGV[1]: the interval, in microseconds; ARGV[2]: how many slots to reserve (consecutive)
-- Returns the microseconds until the first reserved slot (0: now); the others follow it an interval
-- apart. Time not used is not saved up: the first slot is never earlier than now.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local count = tonumber(ARGV[2])
local next_free = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local slot = math.max(next_free, now)
local after = slot + count * interval
-- Kept until its slot has passed, plus a second.
redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', math.ceil((after - now) / 1000) + 1000)
return slot - now
