-- KEYS: job records. Returns the `deliveries` of each (0 for a job without a record).
local counts = {}
for i = 1, #KEYS do counts[i] = tonumber(redis.call('HGET', KEYS[i], 'deliveries') or '0') end
return counts
