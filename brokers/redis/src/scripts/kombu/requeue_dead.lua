-- Moves up to ARGV[1] of the oldest dead letters back to the tail of their queue, each once.
--
-- KEYS[1] the dead-letter list, KEYS[2] the queue's list.
-- A record is '<at ms> <reason length> <reason><message>'.
local moved = 0
for _ = 1, tonumber(ARGV[1]) do
  local record = redis.call('RPOP', KEYS[1])
  if not record then
    break
  end
  local first = string.find(record, ' ', 1, true)
  local second = first and string.find(record, ' ', first + 1, true)
  local length = second and tonumber(string.sub(record, first + 1, second - 1))
  if length then
    redis.call('LPUSH', KEYS[2], string.sub(record, second + 1 + length))
    moved = moved + 1
  else
    -- Not a record of ours: keep it where it was, and stop.
    redis.call('RPUSH', KEYS[1], record)
    break
  end
end
return moved
