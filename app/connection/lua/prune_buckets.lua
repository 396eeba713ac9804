-- Takes expired buckets off the bucket list, oldest first, up to the first one still there (a
-- bucket expires its retention after its last record: about in the order of the list), and
-- corrects the counts. KEYS: the bucket list, the bucket sizes. ARGV: what bucket keys start
-- with, at most how many to take off. Returns how many buckets it took off and how many records
-- they had held.
local removed, taken = 0, 0
while taken < tonumber(ARGV[2]) do
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if oldest == nil or redis.call('EXISTS', ARGV[1] .. oldest) == 1 then break end
  removed = removed + drop_bucket(KEYS[1], KEYS[2], ARGV[1], oldest)
  taken = taken + 1
end
return {taken, removed}
