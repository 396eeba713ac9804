-- An attempt succeeded: the record is packed into its bucket (app/outcomes/packed.py) and its hash
-- and index entries go. KEYS: the record, its bucket, the bucket list, the bucket sizes, then the
-- indexes it leaves (running, queued and retrying when not known to have started, all: global and
-- per job type), and last the hash of this minute's outcome counts.
-- ARGV: job id, duration (ms), at (ms), retention (s), the bucket, the cap on succeeded records
-- (0: none), job name, queue, '1' if it started (its `running` was written), '1' if its execution
-- is not counted yet (its `running` could not be written), the attempt ('' if unknown), what
-- bucket keys start with, the time its id carries (ms; 0 if none), which delivery of the attempt
-- this run was ('' if unknown), and optionally the job's result as JSON.
local record, bucket_key, buckets, sizes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local counts = KEYS[#KEYS]
local id, at, bucket, prefix = ARGV[1], ARGV[3], ARGV[5], ARGV[12]
-- Delivered again after its success was written (its worker died before the ack): it stays as it was.
if redis.call('HEXISTS', bucket_key, id) == 1 then return 0 end
local flat = redis.call('HGETALL', record)
local fields = {}
for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
if ARGV[9] ~= '1' then
  -- Not known to have started here: a retry's time and an earlier attempt's progress and result go.
  fields.nextRetryAt, fields.progress, fields.progressMessage, fields.progressAt, fields.result = nil, nil, nil, nil, nil
end
fields.jobName = fields.jobName or ARGV[7]
if ARGV[8] ~= '' then fields.queue = fields.queue or ARGV[8] end  -- '' (unknown) leaves it absent
-- Whether this run's execution is counted already: its `running` is not waited for by the worker,
-- and one that lands after this write changes nothing (the record is packed), so the record
-- decides when the delivery is known: counted if it shows this attempt running in this delivery.
local counted = ARGV[10] ~= '1'
if counted and ARGV[14] ~= '' and ARGV[11] ~= '' then
  counted = fields.state == '$RUNNING' and fields.attempts == ARGV[11]
    and tonumber(fields.deliveries or '0') >= tonumber(ARGV[14])
end
fields.state, fields.durationMs, fields.finishedAt, fields.updatedAt, fields.deliveries = '$SUCCEEDED', ARGV[2], at, at, '0'
if not counted then fields.executions = tostring(tonumber(fields.executions or '0') + 1) end
if ARGV[11] ~= '' then fields.attempts = ARGV[11] end
if ARGV[15] then fields.result = ARGV[15] end
redis.call('HSET', bucket_key, id, pack_record(fields, tonumber(ARGV[13])))
redis.call('EXPIRE', bucket_key, ARGV[4])
redis.call('DEL', record)
for i = 5, #KEYS - 1 do redis.call('ZREM', KEYS[i], id) end
redis.call('HINCRBY', counts, 'succeeded', 1)
redis.call('EXPIRE', counts, $MINUTE_COUNTS_TTL)
local total = redis.call('HINCRBY', sizes, '$TOTAL_FIELD', 1)
if redis.call('HINCRBY', sizes, bucket, 1) == 1 then
  -- A new bucket: listed, and the oldest one taken off the list if it has expired meanwhile.
  redis.call('ZADD', buckets, bucket, bucket)
  local oldest = redis.call('ZRANGE', buckets, 0, 0)[1]
  if oldest ~= bucket and redis.call('EXISTS', prefix .. oldest) == 0 then
    total = total - drop_bucket(buckets, sizes, prefix, oldest)
  end
end
-- Over the cap: whole buckets go, oldest first (never the one just written), a few per call.
local cap = tonumber(ARGV[6])
local dropped = 0
while cap > 0 and total > cap and dropped < $MAX_BUCKETS_DROPPED do
  local oldest = redis.call('ZRANGE', buckets, 0, 0)[1]
  if oldest == nil or oldest == bucket then break end
  total = total - drop_bucket(buckets, sizes, prefix, oldest)
  dropped = dropped + 1
end
return 1
