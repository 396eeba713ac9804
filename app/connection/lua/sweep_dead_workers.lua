-- Requeues the unacked messages of every worker whose heartbeat is at or below the cutoff, on
-- every queue given (at their priority level), and forgets those workers. ARGV: now, cutoff, the
-- heartbeats key, the ack sets' prefix, the job records' prefix, wake-up tokens, wake-up ttl, then
-- per queue 5 values: its ack sets' suffix (a worker's ack set is prefix .. broker id .. suffix),
-- the queue (its normal list, or a delay queue), its messages, its wake-up list (all from
-- app/keys.py), 1 if it has priority levels. Returns how many messages were requeued.
local now, cutoff = tonumber(ARGV[1]), tonumber(ARGV[2])
local heartbeats, acks_prefix, record_prefix = ARGV[3], ARGV[4], ARGV[5]
local tokens, ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
local moved = 0
for _, worker in ipairs(redis.call('ZRANGEBYSCORE', heartbeats, 0, cutoff)) do
  for q = 8, #ARGV, 5 do
    local acks, queue, messages, wakeup = acks_prefix .. worker .. ARGV[q], ARGV[q + 1], ARGV[q + 2], ARGV[q + 3]
    local ids = redis.call('SMEMBERS', acks)
    for _, id in ipairs(ids) do
      local body = redis.call('HGET', messages, id)
      if body then
        local message = decoded(body)
        local list = queue
        if ARGV[q + 4] == '1' then list = priority_list(queue, message) end
        redis.call('RPUSH', list, id)
        moved = moved + 1
        if type(message) == 'table' and message['message_id'] then
          local record = record_prefix .. message['message_id']
          if redis.call('EXISTS', record) == 1 then
            redis.call('HINCRBY', record, 'redeliveries', 1)
            redis.call('HSET', record, 'redeliveredAt', now)
          end
        end
      end
    end
    if #ids > 0 then
      redis.call('DEL', acks)
      wake_up(wakeup, tokens, ttl)
    end
  end
  redis.call('ZREM', heartbeats, worker)
end
return moved
