-- New jobs, in groups (see enqueue_jobs.lua). Returns how many.
return enqueue_jobs(1)
