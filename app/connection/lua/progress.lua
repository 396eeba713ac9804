-- A running attempt reports its progress. KEYS[1]: the record. ARGV: the attempt, the progress
-- (a percentage), its message ('' for none), at (ms). Written only while the record is running
-- this attempt: a write that lands late (after the attempt finished, or once a later attempt
-- started) changes nothing, and none creates a record. Returns 1 if written.
local found = redis.call('HMGET', KEYS[1], 'state', 'attempts')
if found[1] ~= '$RUNNING' or tonumber(found[2] or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[2], 'progressAt', ARGV[4])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'progressMessage')
else
  redis.call('HSET', KEYS[1], 'progressMessage', ARGV[3])
end
return 1
