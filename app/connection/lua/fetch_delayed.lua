-- Dramatiq's fetch, for a delay queue: up to ARGV[1] ids from the list ARGV[2] into the ack set
-- ARGV[3], and their bodies from the hash ARGV[4] (false for a body gone). Delayed messages are
-- only held until due and then put on their queue (which decides their start).
local ids = {}
for i = 1, tonumber(ARGV[1]) do
  local id = redis.call('LPOP', ARGV[2])
  if not id then break end
  ids[i] = id
end
if #ids == 0 then return {} end
redis.call('SADD', ARGV[3], unpack(ids))
return redis.call('HMGET', ARGV[4], unpack(ids))
