-- Empties lists; returns how many elements they held.
local count = 0
for i = 1, #KEYS do
  count = count + redis.call('LLEN', KEYS[i])
  redis.call('DEL', KEYS[i])
end
return count
