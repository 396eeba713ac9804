-- Dramatiq's ack, as one call. KEYS: the ack set, the queue's messages; ARGV: the redis id.
redis.call('SREM', KEYS[1], ARGV[1])
return redis.call('HDEL', KEYS[2], ARGV[1])
