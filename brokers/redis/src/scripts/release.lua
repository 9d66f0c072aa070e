-- Releases a key if its holder is the caller.
-- KEYS[1]: the key; ARGV[1]: the holder. Returns 1 if released, 0 if someone else (or no one) holds it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
