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
--
-- Messages are popped with one `RPOP list count` per list (one at a time before Redis 6.2) and
-- recorded with one `HSET` and one `ZADD` for the whole call: per message, a `redis.call` cost
-- Redis more than what it did (a call of 128 of Celery's messages: ~11 µs a message before, ~9.5
-- after). What is left is mostly Lua's: each message, and each entry made of it, is a new Lua
-- string, which Redis's Lua hashes byte by byte.

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
-- `HSET` and `ZADD` arguments, sent once for the whole call: each `redis.call` costs Redis more
-- than the work it does for one small message.
local entries, scores = {}, {}

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
  entries[#entries + 1] = tag
  entries[#entries + 1] = '[' .. message .. ', "", ' .. ARGV[6 + pair] .. ']'
  scores[#scores + 1] = now
  scores[#scores + 1] = tag
  taken[#taken + 1] = message
  taken[#taken + 1] = pair
  taken[#taken + 1] = tag
  return true
end

-- Pops up to `count` messages off `list`, oldest first (an empty table when there are none).
local function pop(list, count)
  local popped = redis.pcall('RPOP', list, count)
  if type(popped) == 'table' and popped.err then
    -- Redis before 6.2 pops one at a time.
    popped = {}
    for i = 1, count do
      local message = redis.call('RPOP', list)
      if not message then
        break
      end
      popped[i] = message
    end
  end
  return popped or {}
end

if ARGV[4] ~= '' and record(ARGV[4], tonumber(ARGV[5])) then
  wanted = wanted - 1
end

local pairs_count = (#KEYS - 2) / 2
for pair = 1, pairs_count do
  while wanted > 0 do
    local popped = pop(KEYS[1 + pair * 2], wanted)
    if #popped == 0 then
      break
    end
    for _, message in ipairs(popped) do
      if record(message, pair) then
        wanted = wanted - 1
      end
    end
  end
end
if #entries > 0 then
  redis.call('HSET', KEYS[1], unpack(entries))
  redis.call('ZADD', KEYS[2], unpack(scores))
end
return taken
