-- What queues hold right now, read at once (GET /queues, the API's /metrics). ARGV: the live
-- workers' cutoff (a heartbeat at or above it is live), the heartbeats key, the ack sets'
-- prefix, the paused hash, then per queue: its name, its ack sets' suffix (a worker's ack set
-- is prefix .. broker id .. suffix), its messages, its delayed messages, its dead letters, its
-- throttled set, how many priority lists and slot-waiting lists follow, then those lists (all
-- from app/keys.py). Returns per queue: the length of each priority list, then delayed, failed,
-- waiting, running, the oldest ready job's runnable time in ms (0: none) and when the queue
-- was paused ('': it is not).
local cutoff, heartbeats, acks_prefix, paused = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local live = redis.call('ZRANGEBYSCORE', heartbeats, cutoff, '+inf')

-- When the first job of a list became runnable (0: no job, or one that cannot be read).
local function head_runnable_at(messages, list)
  local id = redis.call('LINDEX', list, 0)
  if not id then return 0 end
  local body = redis.call('HGET', messages, id)
  if not body then return 0 end
  local ok, message = pcall(cjson.decode, body)
  if not ok or type(message) ~= 'table' then return 0 end
  local options = message['options']
  local at = type(options) == 'table' and tonumber(options['runnable_at']) or nil
  return at or tonumber(message['message_timestamp']) or 0
end

local result = {}
local i = 5
while i <= #ARGV do
  local queue, suffix, messages = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local delayed, dead, throttled = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local levels, slot_lists = tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7])
  i = i + 8
  local figures, oldest = {}, 0
  for _ = 1, levels do
    figures[#figures + 1] = redis.call('LLEN', ARGV[i])
    local at = head_runnable_at(messages, ARGV[i])
    if at > 0 and (oldest == 0 or at < oldest) then oldest = at end
    i = i + 1
  end
  local waiting = redis.call('ZCARD', throttled)
  for _ = 1, slot_lists do
    waiting = waiting + redis.call('LLEN', ARGV[i])
    i = i + 1
  end
  local running = 0
  for _, worker in ipairs(live) do running = running + redis.call('SCARD', acks_prefix .. worker .. suffix) end
  figures[#figures + 1] = redis.call('HLEN', delayed)
  figures[#figures + 1] = redis.call('ZCARD', dead)
  figures[#figures + 1] = waiting
  figures[#figures + 1] = running
  figures[#figures + 1] = oldest
  figures[#figures + 1] = redis.call('HGET', paused, queue) or ''
  result[#result + 1] = figures
end
return result
