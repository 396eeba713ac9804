"""Names the benchmark shares between its driver and the processes it starts."""

from __future__ import annotations

#: The queue of the benchmark's job types (never a production queue).
BENCH_QUEUE = "bench"
NOOP = "noop"
PROBE = "probe"
#: List of "<job id> <unix time>" pushed by the probe job when it starts.
STARTS = "bench:starts"
#: A no-op job type with a concurrency limit, declared only by bench.flow (JOB_MODULES=bench.flow),
#: so that the workers of the other measurements have no limited job type at all.
LIMITED_NOOP = "limitedNoop"
#: The limit bench.flow declares it with (default: one that never binds).
CONCURRENCY_ENV = "BENCH_CONCURRENCY"
#: A no-op job that counts its starts in BACKLOG_STARTED: the backlog a high job waits behind.
BACKLOG = "backlogNoop"
BACKLOG_STARTED = "bench:backlog-started"
#: A job that pushes "<job id> <unix time> <BACKLOG_STARTED>" on HIGH_STARTS when it starts.
HIGH_PROBE = "highProbe"
HIGH_STARTS = "bench:high-starts"
