-- Removes a bucket (`prefix` .. `bucket`) and takes it and its count off the bucket list (it may
-- have expired already).
local function drop_bucket(buckets, sizes, prefix, bucket)
  local size = tonumber(redis.call('HGET', sizes, bucket) or '0')
  redis.call('UNLINK', prefix .. bucket)
  redis.call('ZREM', buckets, bucket)
  redis.call('HDEL', sizes, bucket)
  redis.call('HINCRBY', sizes, '$TOTAL_FIELD', -size)
  return size
end
