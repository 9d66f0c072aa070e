-- Reads up to ARGV[3] new entries for consumer ARGV[2] of group ARGV[1], as XREADGROUP would, but
-- inside Redis: an entry whose field values add up to more than ARGV[4] bytes never reaches the
-- worker; it goes to its dead-letter stream with the reason, so the worker's memory is bounded
-- whatever producers write.
-- KEYS[1..n] ready streams   KEYS[n+1..2n] their dead-letter streams
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] most entries   ARGV[4] most bytes   ARGV[5] now (ms)
-- Returns XREADGROUP's reply ({{stream, {{id, {field, value, …}}, …}}, …}), {} when nothing is
-- new, or -1 when a group is missing.
local n = #KEYS / 2
local read = {'XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS'}
for i = 1, n do read[#read + 1] = KEYS[i] end
for i = 1, n do read[#read + 1] = '>' end
local reply = redis.pcall(unpack(read))
if type(reply) == 'table' and reply.err then
  if string.find(reply.err, 'NOGROUP', 1, true) then return -1 end
  return redis.error_reply(reply.err)
end
if not reply then return {} end
local max = tonumber(ARGV[4])
for _, stream in ipairs(reply) do
  local name, kept = stream[1], {}
  local dead
  for i = 1, n do
    if KEYS[i] == name then dead = KEYS[n + i] end
  end
  for _, entry in ipairs(stream[2]) do
    local id, fields, size, payload = entry[1], entry[2], 0, ''
    for i = 1, #fields, 2 do
      size = size + #fields[i + 1]
      if fields[i] == 'p' then payload = fields[i + 1] end
    end
    if size > max then
      redis.call('XADD', dead, '*', 'p', payload, 'reason',
        'message of ' .. size .. ' bytes exceeds the limit of ' .. max ..
        ' bytes (dead-lettered by the broker, unread by the worker)', 'at', ARGV[5])
      redis.call('XACK', name, ARGV[1], id)
      redis.call('XDEL', name, id)
    else
      kept[#kept + 1] = entry
    end
  end
  stream[2] = kept
end
return reply
