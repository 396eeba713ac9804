-- Gives fetched messages back to the head of their queue (they were first in line) and wakes
-- idle consumers. KEYS: the ack set, the queue, the queue's messages, the wake-up list.
-- ARGV: wake-up tokens, wake-up ttl, redis ids in queue order. Returns how many were moved:
-- an id no longer in the ack set (already given back, or acked) is left alone.
local moved = 0
for i = #ARGV, 3, -1 do
  if redis.call('SREM', KEYS[1], ARGV[i]) == 1 and redis.call('HEXISTS', KEYS[3], ARGV[i]) == 1 then
    redis.call('LPUSH', KEYS[2], ARGV[i])
    moved = moved + 1
  end
end
if moved > 0 then wake_up(KEYS[4], tonumber(ARGV[1]), tonumber(ARGV[2])) end
return moved
