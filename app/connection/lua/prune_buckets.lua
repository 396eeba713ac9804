-- Takes expired buckets off the bucket list and corrects the counts. Only buckets older than the
-- retention can have expired (a bucket expires its retention after its last record, which came
-- after its second): those are looked at, oldest first, from an offset, at most a number per call.
-- KEYS: the bucket list, the bucket sizes. ARGV: what bucket keys start with, at most how many to
-- look at, the newest bucket that may have expired, the offset (buckets still there skipped).
-- Returns how many buckets it looked at, how many it took off, and how many records they held.
local buckets = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', ARGV[4], ARGV[2])
local taken, removed = 0, 0
for _, bucket in ipairs(buckets) do
  if redis.call('EXISTS', ARGV[1] .. bucket) == 0 then
    removed = removed + drop_bucket(KEYS[1], KEYS[2], ARGV[1], bucket)
    taken = taken + 1
  end
end
return {#buckets, taken, removed}
