-- Gives fetched messages back to the head of their queue (they were first in line), at their
-- priority level, and wakes idle consumers. KEYS: the ack set, the queue (a delay queue, or the
-- normal list of a queue), the queue's messages, the wake-up list. ARGV: wake-up tokens, wake-up
-- ttl, 1 if the queue has priority levels, then redis ids in queue order. Returns how many were
-- moved: an id no longer in the ack set (already given back, or acked) is left alone.
local moved = 0
for i = #ARGV, 4, -1 do
  local body = redis.call('HGET', KEYS[3], ARGV[i])
  if redis.call('SREM', KEYS[1], ARGV[i]) == 1 and body then
    local list = KEYS[2]
    if ARGV[3] == '1' then list = priority_list(KEYS[2], decoded(body)) end
    redis.call('LPUSH', list, ARGV[i])
    moved = moved + 1
  end
end
if moved > 0 then wake_up(KEYS[4], tonumber(ARGV[1]), tonumber(ARGV[2])) end
return moved
