-- New jobs, each a block of ARGV (see enqueue_jobs.lua). Returns how many.
return enqueue_jobs(1)
