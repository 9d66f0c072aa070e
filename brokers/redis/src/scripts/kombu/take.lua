-- Takes up to ARGV[6] messages off kombu's lists and records each as unacknowledged, atomically,
-- as kombu's QoS does (HSET unacked + ZADD unacked_index), so that Python workers restore them if
-- we die.
--
-- KEYS[1] unacked (hash), KEYS[2] unacked_index (sorted set), then pairs (list, dead-letter list)
-- in the order to serve them.
-- ARGV[1] now (seconds since the epoch, float), ARGV[2] a prefix for the delivery tags of messages
-- without one (the script appends a number), ARGV[3] the largest message accepted (bytes),
-- ARGV[4] a message already popped (BRPOP) or '', ARGV[5] the pair (1-based) that message came
-- from, ARGV[6] the most messages to take.
--
-- Returns {message, pair, tag, redelivered (0/1)} for each message taken, flat ({} when every
-- list is empty). A message that is too large, or not a kombu envelope with delivery_info, is
-- moved to its dead-letter list with the reason and the next one is taken.

local now, fallback_prefix, max_bytes = ARGV[1], ARGV[2], tonumber(ARGV[3])
local wanted = tonumber(ARGV[6])
local fallbacks = 0
local function fallback()
  fallbacks = fallbacks + 1
  return fallback_prefix .. fallbacks
end

local function dead(dead_key, reason, message)
  local at = string.format('%d', tonumber(now) * 1000)
  redis.call('LPUSH', dead_key, at .. ' ' .. #reason .. ' ' .. reason .. message)
end

-- Records `message` from pair `pair`; returns the reply, or nil when it was dead-lettered.
local function record(message, pair)
  local dead_key = KEYS[2 + pair * 2]
  if #message > max_bytes then
    dead(dead_key, 'message of ' .. #message .. ' bytes exceeds the consumer\'s limit of ' .. max_bytes, message)
    return nil
  end
  local ok, decoded = pcall(cjson.decode, message)
  if not ok or type(decoded) ~= 'table' or type(decoded.properties) ~= 'table'
      or type(decoded.properties.delivery_info) ~= 'table' then
    dead(dead_key, 'not a kombu message: no properties.delivery_info', message)
    return nil
  end
  local properties = decoded.properties
  local info = properties.delivery_info
  local exchange = type(info.exchange) == 'string' and info.exchange or ''
  local routing_key = type(info.routing_key) == 'string' and info.routing_key or ''
  local tag = properties.delivery_tag
  if type(tag) ~= 'string' or tag == '' then
    tag = fallback()
  end
  if redis.call('HEXISTS', KEYS[1], tag) == 1 then
    -- A copy of a message still held elsewhere (a producer reusing a tag): keep both.
    tag = fallback()
  end
  redis.call('HSET', KEYS[1], tag,
    '[' .. message .. ', ' .. cjson.encode(exchange) .. ', ' .. cjson.encode(routing_key) .. ']')
  redis.call('ZADD', KEYS[2], now, tag)
  local redelivered = 0
  if info.redelivered == true
      or (type(decoded.headers) == 'table' and decoded.headers.redelivered == true) then
    redelivered = 1
  end
  return {message, pair, tag, redelivered}
end

local taken = {}
local function add(reply)
  for _, field in ipairs(reply) do
    taken[#taken + 1] = field
  end
end

if ARGV[4] ~= '' then
  local reply = record(ARGV[4], tonumber(ARGV[5]))
  if reply then
    add(reply)
    wanted = wanted - 1
  end
end

local pairs_count = (#KEYS - 2) / 2
for pair = 1, pairs_count do
  while wanted > 0 do
    local message = redis.call('RPOP', KEYS[1 + pair * 2])
    if not message then
      break
    end
    local reply = record(message, pair)
    if reply then
      add(reply)
      wanted = wanted - 1
    end
  end
end
return taken
