-- Resumes a queue: forgets its pause and wakes its idle consumers at once (they would otherwise
-- sleep out their backoff). KEYS: the paused hash, the queue's wake-up list. ARGV: the queue,
-- wake-up tokens, wake-up ttl. Returns 1 if the queue was paused, 0 if it was not.
local was_paused = redis.call('HDEL', KEYS[1], ARGV[1])
wake_up(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[2]))
return was_paused
