-- A concurrency slot given back (with the nack of the job that held it, or when it goes back
-- unstarted; an ack uses ack_release.lua). ARGV: the redis id, the slots zset, the waiting list
-- of the job's type on its queue, the queue's wake-up list (tokens and ttl: constants of the
-- script). A job waiting for the slot is then taken by the next fetch, woken now.
redis.call('ZREM', ARGV[2], ARGV[1])
if redis.call('LLEN', ARGV[3]) > 0 then wake_up(ARGV[4], $WAKEUP_TOKENS, $WAKEUP_TTL) end
return 1
