-- Stores a task's result unless the stored one wins, and wakes its waiters. (A success with no
-- record before it is written without this script: `SET NX` and a publish, see result_writes.rs.)
-- KEYS[1]: the result key
-- ARGV[1]: the record; its first byte is the state's code
-- ARGV[2]: how long to keep it, in milliseconds
-- ARGV[3]: the results channel, ARGV[4]: the task's id (announced there once a final state is stored)
-- Returns 1 if stored, 0 if the stored record won.
--
-- The rule is `ResultState::replaces` of celeriac-core: codes 0 pending, 1 started, 2 retry,
-- 3 success, 4 failure, 5 revoked; ranks 0, 1, 1, 3, 2, 2. Nothing replaces a success; a failure
-- replaces anything but a success; progress replaces only progress.
local rank = { [0] = 0, [1] = 1, [2] = 1, [3] = 3, [4] = 2, [5] = 2 }
local new = string.byte(ARGV[1], 1)
local new_rank = rank[new]
if new_rank == nil then
  return redis.error_reply('ERR unknown result state ' .. tostring(new))
end
local current = redis.call('GET', KEYS[1])
if current then
  local old_rank = rank[string.byte(current, 1)] or 0
  if not (new_rank > old_rank or (new_rank == old_rank and new_rank < 3)) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if new >= 3 then
  -- A hint: waiters on this id read the key again.
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return 1
