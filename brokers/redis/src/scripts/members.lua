-- The members of a set written by remember.lua that have not lapsed, each with the milliseconds
-- it has left, on Redis's own clock: a flat list member, left, member, left, …
-- KEYS[1]: the set.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
local answer = {}
for index = 1, #live, 2 do
  answer[#answer + 1] = live[index]
  answer[#answer + 1] = tonumber(live[index + 1]) - now
end
return answer
