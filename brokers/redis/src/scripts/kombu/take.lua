-- Takes up to ARGV[6] messages off kombu's lists and records each as unacknowledged, atomically,
-- as kombu's QoS does (HSET unacked + ZADD unacked_index), so that Python workers restore them if
-- we die.
--
-- KEYS[1] unacked (hash), KEYS[2] unacked_index (sorted set), then pairs (list, dead-letter list)
-- in the order to serve them.
-- ARGV[1] now (seconds since the epoch, float), ARGV[2] a prefix unique to this call for the
-- delivery tags (the script appends a number), ARGV[3] the largest message accepted (bytes),
-- ARGV[4] a message already popped (BRPOP) or '', ARGV[5] the pair (1-based) that message came
-- from, ARGV[6] the most messages to take, then for each pair its queue's name as a JSON string.
--
-- Returns {message, pair, tag} for each message taken, flat ({} when every list is empty).
--
-- The entry is `[message, "", "<queue>"]`: kombu restores it to the queue it was taken from (the
-- anonymous exchange routes by queue name), which is where it belongs even when a topic exchange
-- had copied it to several queues. The message is not decoded here (that took Redis ~4 µs a
-- message; the consumer checks it and dead-letters what is not a kombu envelope). A message that
-- is too large, or that cannot be a JSON object (a kombu restore would fail to read its entry),
-- is moved to its dead-letter list with the reason and the next one is taken.

local now, tag_prefix, max_bytes = ARGV[1], ARGV[2], tonumber(ARGV[3])
local wanted = tonumber(ARGV[6])
local tags = 0

local function dead(dead_key, reason, message)
  local at = string.format('%d', tonumber(now) * 1000)
  redis.call('LPUSH', dead_key, at .. ' ' .. #reason .. ' ' .. reason .. message)
end

-- Whether `message` starts with `{` and ends with `}` (whitespace around allowed).
local function braced(message)
  local first, last = string.byte(message, 1), string.byte(message, #message)
  if first == 123 and last == 125 then
    return true
  end
  return string.find(message, '^%s*{') ~= nil and string.find(message, '}%s*$') ~= nil
end

local taken = {}

-- Records `message` from pair `pair` and adds it to the reply; false when it was dead-lettered.
local function record(message, pair)
  local dead_key = KEYS[2 + pair * 2]
  if #message > max_bytes then
    dead(dead_key, 'message of ' .. #message .. ' bytes exceeds the consumer\'s limit of ' .. max_bytes, message)
    return false
  end
  if not braced(message) then
    dead(dead_key, 'not a kombu message: not a JSON object', message)
    return false
  end
  tags = tags + 1
  local tag = tag_prefix .. tags
  redis.call('HSET', KEYS[1], tag, '[' .. message .. ', "", ' .. ARGV[6 + pair] .. ']')
  redis.call('ZADD', KEYS[2], now, tag)
  taken[#taken + 1] = message
  taken[#taken + 1] = pair
  taken[#taken + 1] = tag
  return true
end

if ARGV[4] ~= '' and record(ARGV[4], tonumber(ARGV[5])) then
  wanted = wanted - 1
end

local pairs_count = (#KEYS - 2) / 2
for pair = 1, pairs_count do
  while wanted > 0 do
    local message = redis.call('RPOP', KEYS[1 + pair * 2])
    if not message then
      break
    end
    if record(message, pair) then
      wanted = wanted - 1
    end
  end
end
return taken
