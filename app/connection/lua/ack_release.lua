-- Dramatiq's ack (ack.lua) and the concurrency slot the job held given back (release_slot.lua),
-- in one call. KEYS: the ack set, the queue's messages. ARGV: the redis id, the slots zset, the
-- waiting list of the job's type on its queue, the queue's wake-up list (the wake-up's tokens and
-- ttl are constants of the script: fewer arguments on every ack).
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', ARGV[2], ARGV[1])
if redis.call('LLEN', ARGV[3]) > 0 then wake_up(ARGV[4], $WAKEUP_TOKENS, $WAKEUP_TTL) end
return 1
