-- Keeps at most a cap of records in one final state, without scanning: the oldest beyond it go,
-- with their other index entries, failedJobs entry and dead letter. ARGV: the state's global
-- index, the cap, at most how many to remove in this call, the records' prefix, the state's
-- per-job-type index prefix, the all index, its per-job-type prefix, the failedJobs prefix, the
-- broker namespace prefix, the dead letters' suffix, the messages' suffix (from app/keys.py).
-- Returns how many records were removed.
local excess = redis.call('ZCARD', ARGV[1]) - tonumber(ARGV[2])
if excess <= 0 then return 0 end
local popped = redis.call('ZPOPMIN', ARGV[1], math.min(excess, tonumber(ARGV[3])))
for i = 1, #popped, 2 do
  local id = popped[i]
  local record = ARGV[4] .. id
  local found = redis.call('HMGET', record, 'jobName', 'queue', 'deadLetterId')
  if found[1] then
    redis.call('ZREM', ARGV[5] .. found[1], id)
    redis.call('ZREM', ARGV[7] .. found[1], id)
  end
  redis.call('ZREM', ARGV[6], id)
  redis.call('DEL', record, ARGV[8] .. id)
  if found[2] and found[3] then
    local dead_letters = ARGV[9] .. found[2] .. ARGV[10]
    redis.call('ZREM', dead_letters, found[3])
    redis.call('HDEL', dead_letters .. ARGV[11], found[3])
  end
end
return #popped / 2
