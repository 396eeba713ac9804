-- A cancel, decided atomically against the job's record. KEYS: the record, then the global and
-- per-job-type index of: canceled, queued, retrying, and the bucket its record is packed into if
-- it succeeded (packed.py). ARGV: the job id, now (ms), index score.
-- A job not started (queued, delayed, retrying) becomes canceled at once: no fetch hands it out
-- from now on, and no delayed message of it is put back on its queue. Returns what happened:
-- 'canceled', 'running' (its cancel is requested: the job can check it), 'missing', or the
-- final state it already has.
local record, id, now = KEYS[1], ARGV[1], ARGV[2]
local state = redis.call('HGET', record, 'state')
if not state then
  if redis.call('HEXISTS', KEYS[8], id) == 1 then return '$SUCCEEDED' end
  return 'missing'
end
if state == '$RUNNING' then
  redis.call('HSET', record, 'cancelRequestedAt', now, 'updatedAt', now)
  return 'running'
end
if state ~= '$QUEUED' and state ~= '$RETRYING' then return state end
redis.call('HSET', record, 'state', '$CANCELED', 'canceledAt', now, 'finishedAt', now, 'updatedAt', now)
redis.call('HDEL', record, 'nextRetryAt')
for i = 4, 7 do redis.call('ZREM', KEYS[i], id) end
redis.call('ZADD', KEYS[2], ARGV[3], id)
redis.call('ZADD', KEYS[3], ARGV[3], id)
return 'canceled'
