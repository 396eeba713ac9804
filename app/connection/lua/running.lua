-- An attempt starts. KEYS: the record, then the global and per-job-type index of: running, then
-- of each state left (queued, and retrying after a first attempt), and last the bucket its record
-- is packed into once it succeeds. ARGV: job id, job name, queue,
-- attempt, at (ms), index score, retention (s), and optionally the worker process running it
-- (host:pid; '' or none if unknown). Returns how many times this attempt was delivered without
-- finishing, counting this one (a crash loop shows here).
-- A start that arrives after its attempt has finished (a worker does not wait for a start's
-- reply: if Redis refused it, it is sent again, possibly after the finish) only counts the
-- execution; one that arrives after the job succeeded changes nothing (its record is packed).
local record, id, at = KEYS[1], ARGV[1], ARGV[5]
if redis.call('HEXISTS', KEYS[#KEYS], id) == 1 then return 0 end
local found = redis.call('HMGET', record, 'state', 'attempts')
local state, attempts = found[1], tonumber(found[2] or '0')
if (state == '$SUCCEEDED' or state == '$FAILED' or state == '$SKIPPED') and attempts >= tonumber(ARGV[4]) then
  redis.call('HINCRBY', record, 'executions', 1)
  return 0
end
local fields = {'jobId', id, 'jobName', ARGV[2], 'queue', ARGV[3], 'state', '$RUNNING', 'attempts', ARGV[4],
  'startedAt', at, 'updatedAt', at}
-- Progress and a result belong to an attempt (a retry's, a requeued job's start afresh), and so
-- does the worker running it.
local cleared = {'nextRetryAt', 'runAt', 'progress', 'progressMessage', 'progressAt', 'result'}
local worker = ARGV[8] or ''
if worker ~= '' then
  fields[#fields + 1] = 'worker'
  fields[#fields + 1] = worker
else
  cleared[#cleared + 1] = 'worker'
end
redis.call('HSET', record, unpack(fields))
redis.call('HDEL', record, unpack(cleared))
for i = 4, #KEYS - 1 do redis.call('ZREM', KEYS[i], id) end
redis.call('ZADD', KEYS[2], ARGV[6], id)
redis.call('ZADD', KEYS[3], ARGV[6], id)
redis.call('EXPIRE', record, ARGV[7])
redis.call('HINCRBY', record, 'executions', 1)
return redis.call('HINCRBY', record, 'deliveries', 1)
