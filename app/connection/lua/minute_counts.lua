-- The console's charts: per-minute outcome counts added up server-side, `size` minutes a bar.
-- KEYS: the minute count hashes, oldest first. ARGV[1]: minutes per bar.
-- Returns succeeded, retried, failed of each bar in turn (flattened).
local size, out = tonumber(ARGV[1]), {}
for i = 1, #KEYS do
  local bar = math.floor((i - 1) / size)
  local values = redis.call('HMGET', KEYS[i], 'succeeded', 'retried', 'failed')
  for j = 1, 3 do
    local at = bar * 3 + j
    out[at] = (out[at] or 0) + (tonumber(values[j]) or 0)
  end
end
return out
