-- Moves up to ARGV[1] of the oldest dead letters back to the ready stream, each once: the copy and the
-- removal happen in one script, so no crash can leave a letter in both places or in neither.
-- KEYS[1] dead stream   KEYS[2] ready stream   ARGV[1] limit
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', tonumber(ARGV[1]))
local moved = 0
for _, entry in ipairs(entries) do
  local fields = entry[2]
  local payload = nil
  for i = 1, #fields, 2 do
    if fields[i] == 'p' then payload = fields[i + 1] end
  end
  if payload then
    redis.call('XADD', KEYS[2], '*', 'p', payload)
    moved = moved + 1
  end
  redis.call('XDEL', KEYS[1], entry[1])
end
return {moved, #entries}
