-- A schedule's run at one tick, as a new job, at most once however many schedulers send it:
-- the SET NX of the run's key and the enqueue in one atomic call, so two schedulers cannot
-- both enqueue it and a failed enqueue takes no key. The schedule's last run is kept (a later
-- tick is never replaced by an earlier one). ARGV: the run's key, its ttl (s), the hash of last
-- runs, the schedule's name, its last run (JSON with runAt), then the job (a group of one: see
-- enqueue_jobs.lua). Returns the id of the job already enqueued for this run, or false after
-- enqueuing this one.
local existing = redis.call('GET', ARGV[1])
if existing then return existing end
redis.call('SET', ARGV[1], first_job_id(6), 'EX', tonumber(ARGV[2]))
local last = redis.call('HGET', ARGV[3], ARGV[4])
if not last or cjson.decode(last)['runAt'] < cjson.decode(ARGV[5])['runAt'] then
  redis.call('HSET', ARGV[3], ARGV[4], ARGV[5])
end
enqueue_jobs(6)
return false
