-- Removes a consumer from the group. Deleting a consumer drops its pending entries, so:
-- - ARGV[3] = '0' (its stream was dropped, deliveries may still be settling): only a consumer that
--   owns no pending entry is removed; another consumer will reclaim what it owns.
-- - ARGV[3] = '1' (the worker stopped: every delivery it handed out is settled): whatever it still
--   owns was read but never reached the worker (a read cut short by the stop), and goes back to the
--   end of the stream as it was; then the consumer is removed.
-- KEYS[1] stream   ARGV[1] group   ARGV[2] consumer   ARGV[3] give back ('0' or '1')
-- Returns how many entries went back (0 or 1 for the conservative mode: whether it was removed).
if ARGV[3] ~= '1' then
  local owned = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
  if #owned == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
    return 1
  end
  return 0
end
local given = 0
while true do
  local owned = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 100, ARGV[2])
  if #owned == 0 then
    break
  end
  for _, pending in ipairs(owned) do
    local id = pending[1]
    local entry = redis.call('XRANGE', KEYS[1], id, id)
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
    if #entry == 1 then
      redis.call('XADD', KEYS[1], '*', unpack(entry[1][2]))
      given = given + 1
    end
  end
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return given
