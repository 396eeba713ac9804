-- A new job under an idempotency key: the SET NX and the enqueue in one atomic call, so two
-- racing requests cannot both enqueue, and a failed enqueue leaves no key. ARGV: the idempotency
-- key, its ttl (s), then the job (a group of one: see enqueue_jobs.lua). Returns the job id already
-- enqueued under that key, or false after enqueuing this one.
local existing = redis.call('GET', ARGV[1])
if existing then return existing end
redis.call('SET', ARGV[1], first_job_id(3), 'EX', tonumber(ARGV[2]))
enqueue_jobs(3)
return false
