-- Removes a succeeded job's packed record. KEYS: its bucket, the bucket sizes. ARGV: the job id,
-- the bucket. Returns 1 if there was one.
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
redis.call('HINCRBY', KEYS[2], '$TOTAL_FIELD', -1)
return 1
