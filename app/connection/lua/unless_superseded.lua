-- Runs the commands unless the record has moved past attempt ARGV[1] or reached a final state
-- (a late write must not roll a job back). KEYS[1]: the record; ARGV: the attempt, then each
-- command as <argc> <arg>... Returns 1 if they ran.
local found = redis.call('HMGET', KEYS[1], 'state', 'attempts')
local state, attempts = found[1], tonumber(found[2] or '0')
if attempts > tonumber(ARGV[1]) or state == '$SUCCEEDED' or state == '$FAILED' or state == '$SKIPPED' or state == '$CANCELED' then
  return 0
end
run_commands(2)
return 1
