-- Takes over entries whose lease expired (their consumer died or hung). An entry delivered
-- max_deliveries times already is a poison message: it goes to the dead-letter stream instead.
-- KEYS[1] stream   KEYS[2] dead-letter stream
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] lease (ms)   ARGV[4] most entries   ARGV[5] max deliveries
-- ARGV[6] now (ms)
-- Returns a flat array: id, payload, id, payload, … of the entries now owned by ARGV[2].
local claimed = {}
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', tonumber(ARGV[3]), '-', '+', tonumber(ARGV[4]))
for _, entry in ipairs(pending) do
  local id, deliveries = entry[1], tonumber(entry[4])
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if #found == 0 then
    redis.call('XACK', KEYS[1], ARGV[1], id)
  else
    local fields, payload = found[1][2], nil
    for i = 1, #fields, 2 do
      if fields[i] == 'p' then payload = fields[i + 1] end
    end
    if payload == nil then
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('XDEL', KEYS[1], id)
    elseif deliveries >= tonumber(ARGV[5]) then
      redis.call('XADD', KEYS[2], '*', 'p', payload, 'reason',
        'poison message: delivered ' .. deliveries .. ' times without being acknowledged', 'at', ARGV[6])
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('XDEL', KEYS[1], id)
    else
      -- Without JUSTID, XCLAIM counts a delivery: that counter is what detects poison messages.
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), id)
      table.insert(claimed, id)
      table.insert(claimed, payload)
    end
  end
end
return claimed
