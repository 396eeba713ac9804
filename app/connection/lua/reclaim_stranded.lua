-- Gives back every id of this process's ack set that no thread holds (KEYS as give_back.lua;
-- ARGV: wake-up tokens, wake-up ttl, 1 if the queue has priority levels, the held ids). Such ids
-- were fetched but dropped from memory: a fetch whose reply was lost, or delayed messages
-- Dramatiq discards on a connection error.
local held = {}
for i = 4, #ARGV do held[ARGV[i]] = true end
local moved = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not held[id] then
    redis.call('SREM', KEYS[1], id)
    local body = redis.call('HGET', KEYS[3], id)
    if body then
      local list = KEYS[2]
      if ARGV[3] == '1' then list = priority_list(KEYS[2], decoded(body)) end
      redis.call('LPUSH', list, id)
      moved = moved + 1
    end
  end
end
if moved > 0 then wake_up(KEYS[4], tonumber(ARGV[1]), tonumber(ARGV[2])) end
return moved
