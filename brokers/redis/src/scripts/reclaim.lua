-- Takes over entries whose lease expired (their consumer died or hung). An entry delivered
-- max_deliveries times already is a poison message: it goes to the dead-letter stream instead.
-- KEYS[1] stream   KEYS[2] dead-letter stream
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] lease (ms)   ARGV[4] most entries   ARGV[5] max deliveries
-- ARGV[6] now (ms)   ARGV[7] idle time (ms) after which a consumer owning nothing is deleted
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
-- Consumers that left without retiring (killed, or from before retiring existed) pile up in the
-- group: delete those idle for long that own no pending entry. A live one reads every half second,
-- and one deleted anyway is created again by its next read.
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name, pending, idle = nil, nil, nil
  for i = 1, #consumer, 2 do
    if consumer[i] == 'name' then name = consumer[i + 1]
    elseif consumer[i] == 'pending' then pending = consumer[i + 1]
    elseif consumer[i] == 'idle' then idle = consumer[i + 1] end
  end
  if name ~= ARGV[2] and pending == 0 and idle ~= nil and idle > tonumber(ARGV[7]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
  end
end
return claimed
