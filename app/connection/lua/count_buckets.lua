-- How many succeeded records the buckets ARGV[1] to ARGV[2] hold (bucket numbers; '-inf' and
-- '+inf' allowed), looking at ARGV[3] buckets at most, oldest first. KEYS: the bucket list, the
-- bucket sizes. Returns {the count, 1 if the range holds more buckets than were looked at}.
local most = tonumber(ARGV[3])
local buckets = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, most + 1)
local capped = 0
if #buckets > most then
  capped = 1
  buckets[#buckets] = nil
end
local count = 0
for first = 1, #buckets, 1000 do
  local sizes = redis.call('HMGET', KEYS[2], unpack(buckets, first, math.min(first + 999, #buckets)))
  for _, size in ipairs(sizes) do count = count + tonumber(size or '0') end
end
return {count, capped}
