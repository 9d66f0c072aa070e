-- Removes every waiting message of a queue (ready entries not yet delivered, and delayed ones);
-- deliveries in flight are left alone. Returns how many were removed.
-- KEYS[1] stream   KEYS[2] delayed sorted set   ARGV[1] group
local removed = redis.call('ZCARD', KEYS[2])
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return removed
end
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0')
local last = '0-0'
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last_delivered
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'last-delivered-id' then last_delivered = group[i + 1] end
  end
  if name == ARGV[1] then last = last_delivered end
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. last, '+')
for _, entry in ipairs(entries) do
  redis.call('XDEL', KEYS[1], entry[1])
end
return removed + #entries
