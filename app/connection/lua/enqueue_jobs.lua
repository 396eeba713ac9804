-- New jobs' enqueue: each job's message, wake-up, outcome record (state queued), index entries
-- and enqueued count. ARGV from `first` on (app/broker/enqueue.py builds it) is a run of groups,
-- each a header of $GROUP values and the jobs that share it, $JOB values each.
-- A group's header: 'g', the message hash, the list, the wake-up list with its tokens and ttl,
-- what the records' keys start with, the queued and all indexes (global, per job type), the
-- enqueued counts hash and field, the retention, then the values of GROUP_FIELDS.
-- A job: 'j', the redis id, the body, the index score, then the values of JOB_FIELDS (the job id
-- first). An empty value leaves a field out.
-- What jobs share (the message hash, the queue, an index, a count) is written once per key, and a
-- group's header is sent once for its jobs, so that calls of this script from concurrent requests
-- merge into one with few values per job (app/connection/commands.py coalesce).
local GROUP_FIELDS = {$GROUP_FIELDS}
local JOB_FIELDS = {$JOB_FIELDS}
local function first_job_id(first)
  return ARGV[first + $GROUP + 4]
end
-- The values from ARGV[at + 1] on, one per name, appended to `out` as field-value pairs (an
-- empty value leaves its field out).
local function add_fields(out, names, at)
  for f, name in ipairs(names) do
    local value = ARGV[at + f]
    if value ~= '' then
      out[#out + 1] = name
      out[#out + 1] = value
    end
  end
  return out
end
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
  local jobs, i, g, shared = 0, first, nil, nil
  while i <= #ARGV do
    if ARGV[i] == 'g' then
      g = i
      shared = add_fields({}, GROUP_FIELDS, g + 13)
      if wakeups[ARGV[g + 3]] == nil then wakeups[ARGV[g + 3]] = {0, tonumber(ARGV[g + 4]), tonumber(ARGV[g + 5])} end
      i = i + $GROUP
    else
      jobs = jobs + 1
      local redis_id, score, job_id = ARGV[i + 1], ARGV[i + 3], ARGV[i + 4]
      append(bodies, ARGV[g + 1], redis_id, ARGV[i + 2])
      append(queues, ARGV[g + 2], redis_id)
      local wakeup = wakeups[ARGV[g + 3]]
      wakeup[1] = wakeup[1] + 1
      local fields = add_fields({unpack(shared)}, JOB_FIELDS, i + 3)
      local record = ARGV[g + 6] .. job_id
      redis.call('HSET', record, unpack(fields))
      redis.call('EXPIRE', record, ARGV[g + 13])
      for k = g + 7, g + 10 do append(indexes, ARGV[k], score, job_id) end
      local count = counts[ARGV[g + 11]]
      if count == nil then
        count = {}
        counts[ARGV[g + 11]] = count
      end
      count[ARGV[g + 12]] = (count[ARGV[g + 12]] or 0) + 1
      i = i + $JOB
    end
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
  for key, wakeup in pairs(wakeups) do
    if wakeup[1] > 0 then wake_up(key, wakeup[2], wakeup[3], wakeup[1]) end
  end
  return jobs
end
