-- Extends a claim if its holder is the caller and, if a record key is given, writes the record:
-- both or neither, so a holder whose claim lapsed cannot write over its successor's record.
-- KEYS[1]: the claim; KEYS[2] (optional): the record.
-- ARGV[1]: the holder; ARGV[2]: the new expiry in milliseconds; ARGV[3]: the record.
-- Returns 1 if the claim was the caller's, 0 otherwise.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if KEYS[2] then
  redis.call('SET', KEYS[2], ARGV[3])
end
return 1
