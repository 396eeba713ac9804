-- Hands out up to `n` jobs of a queue to one worker process, deciding in one atomic call what
-- each start depends on: the queue's pause, the priority levels' turns, a cancel, and the job
-- type's concurrency and rate limits (app/broker/fetch.py builds the arguments).
-- ARGV: n, the paused hash, the queue's name, the worker's ack set, the queue's messages, its
-- lists high, normal and low, the turns counter, the throttled zset, the job records' prefix,
-- the slot lease (ms), the scan budget; then, per limited job type, 8
-- values: its name, its concurrency (0: none), its slots zset, its slot-waiting list, its rate
-- limit (0: none), the rate window (ms), 1 if the rate is per key, the rate window key (a per-key
-- window is that key, ':' and the job's rate key).
-- Returns {the time (ms) the next throttled job is due or 0, then per job handed out: its body,
-- and how many times its current attempt was delivered without finishing}.
local n, paused, queue, acks, messages = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local levels = {ARGV[6], ARGV[7], ARGV[8]}
local turns, throttled, record_prefix = ARGV[9], ARGV[10], ARGV[11]
local lease, budget = tonumber(ARGV[12]), tonumber(ARGV[13])

if redis.call('HEXISTS', paused, queue) == 1 then return {0} end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

-- Put back at the head of its level, keeping the order given.
local function put_back(entries)
  for i = #entries, 1, -1 do
    local level, id = string.match(entries[i], '^(%d)|(.+)$$')
    redis.call('LPUSH', levels[tonumber(level)], id)
  end
end

-- Jobs whose rate window has room again.
local due = redis.call('ZRANGEBYSCORE', throttled, '-inf', now, 'LIMIT', 0, budget)
if #due > 0 then
  redis.call('ZREM', throttled, unpack(due))
  put_back(due)
end

-- Limits by job name; expired slot leases (a worker that died holding one) are freed, and as
-- many jobs as there are free slots go back from waiting to the head of their level.
local limits = {}
for i = 14, #ARGV, 8 do
  local limit = {
    concurrency = tonumber(ARGV[i + 1]), slots = ARGV[i + 2], waiting = ARGV[i + 3],
    rate = tonumber(ARGV[i + 4]), window = tonumber(ARGV[i + 5]), per_key = ARGV[i + 6] == '1',
    rate_key = ARGV[i + 7], blocked = {}, taken = {},
  }
  limits[ARGV[i]] = limit
  if limit.concurrency > 0 then
    redis.call('ZREMRANGEBYSCORE', limit.slots, '-inf', now)
    limit.held = redis.call('ZCARD', limit.slots)  -- counted here once, then kept up to date
    local free = limit.concurrency - limit.held
    if free > 0 then
      local back = {}
      for _ = 1, math.min(free, budget) do
        local entry = redis.call('LPOP', limit.waiting)
        if not entry then break end
        back[#back + 1] = entry
      end
      put_back(back)
    end
  end
end

-- The job name and id of a body (our encoder writes queue_name and actor_name first and
-- message_id, message_timestamp last; anything else is decoded).
local function parse(body)
  local name = string.match(body, '^{"queue_name":"[^"]*","actor_name":"([^"]*)"')
  local job_id = string.match(body, '"message_id":"([^"]*)","message_timestamp":[%d.e+]+}$$')
  if name == nil or job_id == nil then
    local ok, message = pcall(cjson.decode, body)
    if not ok or type(message) ~= 'table' then return nil, nil end
    return message['actor_name'], message['message_id']
  end
  return name, job_id
end

local function rate_key_of(body)
  local ok, message = pcall(cjson.decode, body)
  if ok and type(message) == 'table' and type(message['options']) == 'table' then
    return tostring(message['options']['rate_key'] or '')
  end
  return ''
end

-- Whether a job of this type may start now; if not, it is parked (waiting or throttled).
local function admit(limit, id, level, body)
  if limit.concurrency > 0 and limit.held >= limit.concurrency then
    redis.call('RPUSH', limit.waiting, level .. '|' .. id)
    return false
  end
  if limit.rate > 0 then
    local window = limit.rate_key
    if limit.per_key then window = window .. ':' .. rate_key_of(body) end
    redis.call('ZREMRANGEBYSCORE', window, '-inf', now - limit.window)
    local used = redis.call('ZCARD', window)
    if used >= limit.rate then
      -- Due when enough of the window's starts have aged out for this job's turn.
      local blocked = (limit.blocked[window] or 0)
      limit.blocked[window] = blocked + 1
      local index = used - limit.rate + (blocked % limit.rate)
      local aged = redis.call('ZRANGE', window, index, index, 'WITHSCORES')
      local at = tonumber(aged[2] or now) + limit.window * (1 + math.floor(blocked / limit.rate))
      redis.call('ZADD', throttled, at, level .. '|' .. id)
      return false
    end
    redis.call('ZADD', window, now, id .. ':' .. now)
    redis.call('PEXPIRE', window, limit.window * 2)
  end
  if limit.concurrency > 0 then
    -- Its lease is written with the others' at the end of the call (one ZADD, not one each).
    limit.held = limit.held + 1
    limit.taken[#limit.taken + 1] = id
  end
  return true
end

-- Of every 10 jobs handed out while several levels have some: 6 high, 3 normal, 1 low (a level
-- with none gives its turn to the next), so that no level waits forever.
local orders = {{1, 2, 3}, {2, 1, 3}, {3, 2, 1}}
local turn = tonumber(redis.call('GET', turns) or '0')
local out = {0}
local handed, examined = 0, 0
while handed < n and examined < budget do
  local slot = turn % 10
  local order = orders[slot < 6 and 1 or (slot < 9 and 2 or 3)]
  local id, level
  for _, l in ipairs(order) do
    id = redis.call('LPOP', levels[l])
    if id then
      level = l
      break
    end
  end
  if not id then break end
  examined = examined + 1
  local body = redis.call('HGET', messages, id)
  if body then
    local name, job_id = parse(body)
    local record = record_prefix .. (job_id or '')
    local found = redis.call('HMGET', record, 'state', 'deliveries')
    if found[1] == '$CANCELED' then
      redis.call('HDEL', messages, id)  -- canceled before any worker had it: never starts
    else
      local limit = limits[name]
      if limit == nil or admit(limit, id, level, body) then
        redis.call('SADD', acks, id)
        out[#out + 1] = body
        out[#out + 1] = tonumber(found[2] or '0')
        handed = handed + 1
        turn = turn + 1
      end
    end
  end
end
-- The slot leases taken in this call, one ZADD per job type (in chunks, within Lua's stack). A
-- job whose redis id still held a lease (given back by the sweep before it ran out) was counted
-- once more than it holds: this call admitted at most the limit, and the next one counts again.
for _, limit in pairs(limits) do
  local taken = limit.taken
  for first = 1, #taken, $LEASES_PER_ZADD do
    local args = {}
    for i = first, math.min(first + $LEASES_PER_ZADD - 1, #taken) do
      args[#args + 1] = now + lease
      args[#args + 1] = taken[i]
    end
    redis.call('ZADD', limit.slots, unpack(args))
  end
end
if handed > 0 then redis.call('SET', turns, turn % 10) end
local next_due = redis.call('ZRANGE', throttled, 0, 0, 'WITHSCORES')
if next_due[2] then out[1] = tonumber(next_due[2]) end
return out
