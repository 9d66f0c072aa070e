-- Moves a pending entry that was too large to read to the dead-letter stream with a reason,
-- copying its payload inside Redis, if it is still pending.
-- KEYS[1] stream   KEYS[2] dead-letter stream
-- ARGV[1] group   ARGV[2] entry id   ARGV[3] reason   ARGV[4] now (ms)
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
  local payload = ''
  if #found == 1 then
    local fields = found[1][2]
    for i = 1, #fields, 2 do
      if fields[i] == 'p' then payload = fields[i + 1] end
    end
  end
  redis.call('XDEL', KEYS[1], ARGV[2])
  redis.call('XADD', KEYS[2], '*', 'p', payload, 'reason', ARGV[3], 'at', ARGV[4])
  return 1
end
return 0
