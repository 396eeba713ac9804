-- Wakes idle consumers of a queue: `count` tokens (default 1) pushed on its wake-up list, the
-- list trimmed to `tokens`, with an expiry (never a growing list).
local function wake_up(key, tokens, ttl, count)
  local pushed = {}
  for n = 1, math.min(count or 1, tokens) do pushed[n] = 1 end
  redis.call('LPUSH', key, unpack(pushed))
  redis.call('LTRIM', key, 0, tokens - 1)
  redis.call('EXPIRE', key, ttl)
end
