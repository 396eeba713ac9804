"""Names the benchmark shares between its driver and the processes it starts."""

from __future__ import annotations

#: The queue of the benchmark's job types (never a production queue).
BENCH_QUEUE = "bench"
NOOP = "noop"
PROBE = "probe"
#: List of "<job id> <unix time>" pushed by the probe job when it starts.
STARTS = "bench:starts"
