-- Stores a task's result in Celery's format unless the stored one wins, and publishes it on the
-- key's own channel, where Python's `AsyncResult.get()` (and celeriac's) waits.
-- KEYS[1]: celery-task-meta-<id>
-- ARGV[1]: the result meta (JSON), ARGV[2]: how long to keep it (ms), ARGV[3]: the new state's rank
-- Returns 1 if stored, 0 if the stored result won.
--
-- The rule is `ResultState::replaces` of celeriac-core, on Celery's states: ranks 0 pending,
-- 1 started and retry, 2 failure and revoked, 3 success. Nothing replaces a success (Celery's
-- backend refuses that too); a failure replaces anything but a success; progress replaces only
-- progress.
local ranks = {
  PENDING = 0, RECEIVED = 0, STARTED = 1, RETRY = 1,
  FAILURE = 2, REVOKED = 2, REJECTED = 2, IGNORED = 2, SUCCESS = 3,
}
local new_rank = tonumber(ARGV[3])
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  local old_rank = 0
  if ok and type(meta) == 'table' then
    old_rank = ranks[meta.status] or 0
  end
  if not (new_rank > old_rank or (new_rank == old_rank and new_rank < 3)) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
