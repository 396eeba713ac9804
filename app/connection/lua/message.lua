-- Puts a message on a queue (Dramatiq's layout) and wakes an idle consumer. KEYS: the queue's
-- messages, the queue, its wake-up list. ARGV: the redis id, the body, wake-up tokens and ttl.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[1])
wake_up(KEYS[3], tonumber(ARGV[3]), tonumber(ARGV[4]))
return 1
