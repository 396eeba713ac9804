-- Puts a message on a queue (Dramatiq's layout) and wakes an idle consumer, unless its job was
-- canceled meanwhile (a delayed or retrying job canceled while a worker held it until due).
-- KEYS: the queue's messages, the list (its delay queue, or its priority level's list), its
-- wake-up list, the job's record. ARGV: the redis id, the body, wake-up tokens and ttl.
if redis.call('HGET', KEYS[4], 'state') == '$CANCELED' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[1])
wake_up(KEYS[3], tonumber(ARGV[3]), tonumber(ARGV[4]))
return 1
