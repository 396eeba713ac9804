"""Redis memory and CPU per finished job (issue 15): what one Redis can carry.

`jobs` emailJobs from the producer (`python -m app.producer --generate N --job emailJob`) are run
to success by our real workers (`dramatiq app.actors`, mail written to an mbox file). Redis's
`used_memory` (INFO memory) before the producer starts and after the last job succeeded, with the
workers stopped, gives the bytes each finished job keeps; Redis's own CPU time (INFO cpu, user +
system) over the enqueue and the run gives its CPU per job (idle polling included: a conservative
figure), and INFO commandstats the commands each job costs. The capacity table follows from both.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from app.keys import Keys
from app.outcomes.packed import TOTAL_FIELD
from bench.context import Context
from tests.support.services import wait_until

#: Rates (jobs/s) and retentions (s) of the capacity table.
RATES = (10, 100, 1_000)
RETENTIONS = {"24 h": 86_400, "7 days": 7 * 86_400}
#: How long Redis's CPU is watched with the workers idle (a measured span).
IDLE_SPAN_S = 3.0


def measure(context: Context, *, jobs: int = 20_000, processes: int = 2, threads: int = 8) -> dict[str, Any]:
    context.flush()
    client = context.client
    keys = Keys(namespace=context.settings.namespace)
    client.config_resetstat()
    memory_before = _used_memory(context)
    cpu_before, clock_before = _redis_cpu_s(context), time.monotonic()
    produced = subprocess.run(
        [sys.executable, "-m", "app.producer", "--generate", str(jobs), "--job", "emailJob", "--quiet"],
        env=context.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if produced.returncode != 0:
        raise RuntimeError(f"producer failed ({produced.returncode}):\n{produced.stdout}\n{produced.stderr}")
    enqueue_cpu_s = _redis_cpu_s(context) - cpu_before
    worker = context.worker("app.actors", processes, threads)
    started = time.monotonic()  # from when its processes are ready (they may have begun already)
    try:
        succeeded = lambda: int(client.hget(keys.succeeded_sizes(), TOTAL_FIELD) or 0)  # noqa: E731
        wait_until(lambda: succeeded() >= jobs, timeout=600, interval=0.2, message=f"{jobs} jobs to succeed")
        elapsed = time.monotonic() - started
        cpu_s, busy_s = _redis_cpu_s(context) - cpu_before, time.monotonic() - clock_before
        # What Redis spends with these workers idle (their polls, heartbeats, its own cron), per
        # second: taken off the run's CPU, so that what is left is what the jobs cost.
        idle_from, idle_cpu_from = time.monotonic(), _redis_cpu_s(context)
        time.sleep(IDLE_SPAN_S)
        idle_rate = (_redis_cpu_s(context) - idle_cpu_from) / (time.monotonic() - idle_from)
    finally:
        context.stop(worker)
    memory_after = _used_memory(context)
    commandstats = {
        name.removeprefix("cmdstat_"): stats
        for name, stats in client.info("commandstats").items()
        if isinstance(stats, dict) and "calls" in stats
    }
    # Calls include those the Lua scripts make (their time too: it is counted twice, so CPU per
    # job comes from INFO cpu instead).
    calls = {name: int(stats["calls"]) for name, stats in commandstats.items()}
    bytes_per_job = (memory_after - memory_before) / jobs
    cpu_us = cpu_s / jobs * 1e6
    job_cpu_us = max(0.0, cpu_s - idle_rate * busy_s) / jobs * 1e6
    enqueue_cpu_us = enqueue_cpu_s / jobs * 1e6
    records_bytes = _records_bytes(context, keys)
    return {
        "jobs": jobs,
        "workers": f"{processes}x{threads}",
        "run_s": round(elapsed, 1),
        "used_memory_before": memory_before,
        "used_memory_after": memory_after,
        "bytes_per_job": round(bytes_per_job),
        "records_bytes_per_job": round(records_bytes / jobs),
        "redis_cpu_us_per_job": round(cpu_us, 1),
        "redis_idle_cpu_ms_per_s": round(idle_rate * 1000, 1),
        "redis_enqueue_cpu_us_per_job": round(enqueue_cpu_us, 1),
        "jobs_per_s": round(jobs / elapsed, 1),
        "redis_job_cpu_us_per_job": round(job_cpu_us, 1),
        "jobs_per_redis_core_s": round(1e6 / job_cpu_us) if job_cpu_us else None,
        "calls_per_job": {name: round(n / jobs, 2) for name, n in sorted(calls.items(), key=lambda kv: -kv[1])[:12]},
        "capacity": capacity(bytes_per_job),
    }


def capacity(bytes_per_job: float) -> dict[str, dict[str, float]]:
    """GB of Redis memory that the finished jobs of a rate kept for a retention take."""
    return {
        f"{rate} jobs/s": {name: round(bytes_per_job * rate * seconds / 1e9, 2) for name, seconds in RETENTIONS.items()}
        for rate in RATES
    }


def _records_bytes(context: Context, keys: Keys) -> int:
    """What the packed records alone take: the memory freed when their buckets are deleted (last:
    it empties them)."""
    client = context.client
    before = _used_memory(context)
    buckets = [keys.succeeded_bucket(int(b)) for b in client.zrange(keys.succeeded_buckets(), 0, -1)]
    for start in range(0, len(buckets), 100):
        client.delete(*buckets[start : start + 100])
    return before - _used_memory(context)


def _used_memory(context: Context) -> int:
    return int(context.client.info("memory")["used_memory"])


def _redis_cpu_s(context: Context) -> float:
    info = context.client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
