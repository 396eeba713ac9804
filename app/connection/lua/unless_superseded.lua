-- Runs the commands unless the record has moved past attempt ARGV[1] or reached a final state
-- (a late write must not roll a job back). KEYS[1]: the record; ARGV: the attempt, an entry to
-- append to the record's history ('' for none: see append_history.lua), then each command as
-- <argc> <arg>... Returns 1 if they ran.
local found = redis.call('HMGET', KEYS[1], 'state', 'attempts')
local state, attempts = found[1], tonumber(found[2] or '0')
if attempts > tonumber(ARGV[1]) or state == '$SUCCEEDED' or state == '$FAILED' or state == '$SKIPPED' or state == '$CANCELED' then
  return 0
end
if ARGV[2] ~= '' then append_history(KEYS[1], ARGV[2], $MAX_HISTORY) end
run_commands(3)
return 1
