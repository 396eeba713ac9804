-- Dramatiq's nack (dispatch.lua's "nack"): the delivery leaves the ack set and its message
-- becomes a dead letter. KEYS: the ack set, the queue's messages, the dead letters (a zset by
-- time) and their messages. ARGV: the redis id, now (ms). Returns 1 if a dead letter was made.
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local message = redis.call('HGET', KEYS[2], ARGV[1])
if not message then return 0 end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], message)
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
