-- Runs the commands unless the record has moved past attempt ARGV[2] or reached a final state
-- (a late write must not roll a job back). KEYS: the record, the bucket it is packed into once it
-- succeeded (packed.py). ARGV: the job id, the attempt, an entry to append to the record's history
-- ('' for none: see append_history.lua), then each command as <argc> <arg>... Returns 1 if they ran.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local found = redis.call('HMGET', KEYS[1], 'state', 'attempts')
local state, attempts = found[1], tonumber(found[2] or '0')
if attempts > tonumber(ARGV[2]) or state == '$SUCCEEDED' or state == '$FAILED' or state == '$SKIPPED' or state == '$CANCELED' then
  return 0
end
if ARGV[3] ~= '' then append_history(KEYS[1], ARGV[3], $MAX_HISTORY) end
run_commands(4)
return 1
