-- New jobs' enqueue: each job's message, wake-up, outcome record (state queued), index entries
-- and enqueued count. ARGV from `first` on is a run of blocks of $BLOCK values, one per job
-- (app/broker/enqueue.py builds them): the message hash, the queue, the redis id, the body; the
-- wake-up list, its tokens and ttl; the record, the index score, the queued and all indexes
-- (global, per job type), the enqueued counts hash and field, the retention; then the values of
-- the record's fields, in the order of NEW_JOB_FIELDS (an empty value leaves a field out).
-- What jobs share (the message hash, the queue, an index, a count) is written once per key, so
-- that calls of this script from concurrent requests merge into one.
local FIELDS = {$FIELDS}
local function enqueue_jobs(first)
  local bodies, queues, indexes, counts, wakeups = {}, {}, {}, {}, {}
  local function append(t, key, a, b)
    local values = t[key]
    if values == nil then
      values = {}
      t[key] = values
    end
    values[#values + 1] = a
    if b ~= nil then values[#values + 1] = b end
  end
  local jobs = 0
  for i = first, #ARGV, $BLOCK do
    jobs = jobs + 1
    local redis_id, record, score, job_id = ARGV[i + 2], ARGV[i + 7], ARGV[i + 8], ARGV[i + 16]
    append(bodies, ARGV[i], redis_id, ARGV[i + 3])
    append(queues, ARGV[i + 1], redis_id)
    local wakeup = wakeups[ARGV[i + 4]]
    if wakeup == nil then
      wakeups[ARGV[i + 4]] = {1, tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6])}
    else
      wakeup[1] = wakeup[1] + 1
    end
    local fields = {}
    for f, name in ipairs(FIELDS) do
      local value = ARGV[i + 15 + f]
      if value ~= '' then
        fields[#fields + 1] = name
        fields[#fields + 1] = value
      end
    end
    redis.call('HSET', record, unpack(fields))
    redis.call('EXPIRE', record, ARGV[i + 15])
    for k = i + 9, i + 12 do append(indexes, ARGV[k], score, job_id) end
    local count = counts[ARGV[i + 13]]
    if count == nil then
      count = {}
      counts[ARGV[i + 13]] = count
    end
    count[ARGV[i + 14]] = (count[ARGV[i + 14]] or 0) + 1
  end
  -- In chunks: Lua unpacks at most about 8,000 values.
  local function write(command, t)
    for key, values in pairs(t) do
      for from = 1, #values, 2000 do
        redis.call(command, key, unpack(values, from, math.min(from + 1999, #values)))
      end
    end
  end
  write('HSET', bodies)
  write('RPUSH', queues)
  write('ZADD', indexes)
  for key, fields in pairs(counts) do
    for field, n in pairs(fields) do redis.call('HINCRBY', key, field, n) end
  end
  for key, wakeup in pairs(wakeups) do wake_up(key, wakeup[2], wakeup[3], wakeup[1]) end
  return jobs
end
