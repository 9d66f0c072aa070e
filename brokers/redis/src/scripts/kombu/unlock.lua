-- Releases a lock held with SET NX PX, if its token is still ours (redis-py's Lock does the same).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
