-- An attempt succeeded. KEYS: the record, then the global and per-job-type index of: succeeded,
-- then of each state left (running, and unless it is known to have started: queued, retrying),
-- and last the hash of this minute's outcome counts.
-- ARGV: job id, duration (ms), at (ms), index score, retention (s), then optionally the attempt
-- ('' if unknown) and the job's result as JSON.
local record, id, at = KEYS[1], ARGV[1], ARGV[3]
local counts, last_index = KEYS[#KEYS], #KEYS - 1
local fields = {'state', '$SUCCEEDED', 'durationMs', ARGV[2], 'finishedAt', at, 'updatedAt', at, 'deliveries', 0}
if ARGV[6] and ARGV[6] ~= '' then
  fields[#fields + 1] = 'attempts'
  fields[#fields + 1] = ARGV[6]
end
if ARGV[7] then
  fields[#fields + 1] = 'result'
  fields[#fields + 1] = ARGV[7]
end
-- More than 4 indexes: the queued and retrying indexes too, so not known to have started (a start
-- clears nextRetryAt, and an earlier attempt's progress and result).
if last_index > 5 then
  redis.call('HDEL', record, 'nextRetryAt', 'progress', 'progressMessage', 'progressAt', 'result')
end
redis.call('HSET', record, unpack(fields))
for i = 4, last_index do redis.call('ZREM', KEYS[i], id) end
redis.call('ZADD', KEYS[2], ARGV[4], id)
redis.call('ZADD', KEYS[3], ARGV[4], id)
redis.call('HINCRBY', counts, 'succeeded', 1)
redis.call('EXPIRE', counts, $MINUTE_COUNTS_TTL)
return redis.call('EXPIRE', record, ARGV[5])
