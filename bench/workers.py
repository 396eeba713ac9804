"""Worker throughput: a queue pre-filled with no-op jobs, drained by `dramatiq bench.ours` or `bench.plain`.

The rate is measured in steady state: from a moment after the first job is done until
a time window ends or the queue is nearly empty. A job counts as done when its message leaves
Dramatiq's message hash, which happens at the ack, in both stacks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.keys import DEFAULT_PRIORITY, Keys
from bench import cpu
from bench.context import Context, wait_until
from bench.jobs import OurSender, PlainSender
from bench.keys import BENCH_QUEUE, NOOP

OURS = "bench.ours"
PLAIN = "bench.plain"


@dataclass(frozen=True)
class Run:
    """How long one throughput measurement may take."""

    jobs: int
    warmup_s: float
    window_s: float


def throughput(
    context: Context,
    module: str,
    processes: int,
    threads: int,
    run: Run,
    *,
    job: str = NOOP,
    priorities: Sequence[str] = (DEFAULT_PRIORITY,),
    **env: str,
) -> dict[str, Any]:
    """Jobs per second of one worker configuration, in steady state: `run.jobs` jobs of `job`
    (ours only: their priority levels taken from `priorities` in turn)."""
    context.flush()
    if module == OURS:
        OurSender(context.settings, context.client).send(job, run.jobs, priorities)
    else:
        PlainSender(context.settings, context.client).send(job, run.jobs)
    messages_key = Keys(namespace=context.settings.namespace).queue_messages(BENCH_QUEUE)
    remaining = lambda: int(context.client.hlen(messages_key))  # noqa: E731
    worker = context.worker(module, processes, threads, **env)
    try:
        # The warm-up counts from the first job done: on a loaded machine a worker can log that it
        # is ready well before its consumers run.
        wait_until(lambda: remaining() < run.jobs, timeout=60, interval=0.01, message=f"{module}'s first job")
        time.sleep(run.warmup_s)
        workers = cpu.tree(worker.pid)
        redis_pid = [context.redis.process.pid] if context.redis.process else []
        cpu_at_start = cpu.seconds(workers), cpu.seconds(redis_pid)
        started, left_at_start = time.monotonic(), remaining()
        ended, left = started, left_at_start
        floor = run.jobs * 0.05
        while ended - started < run.window_s and left > floor:
            time.sleep(0.05)
            ended, left = time.monotonic(), remaining()
        if left_at_start <= floor:
            raise RuntimeError(f"{module} {processes}x{threads}: the queue emptied during warm-up: pre-fill more jobs")
        done = left_at_start - left
        elapsed = ended - started
        worker_cpu = cpu.seconds(workers) - cpu_at_start[0]
        redis_cpu = cpu.seconds(redis_pid) - cpu_at_start[1]
    finally:
        context.stop(worker)
    return {
        "jobs_per_s": round(done / elapsed, 1),
        "jobs_measured": done,
        "window_s": round(elapsed, 2),
        # CPU per job: less disturbed than the rate by whatever else the machine runs.
        "worker_cpu_us_per_job": round(worker_cpu / done * 1e6, 1) if done else None,
        "redis_cpu_us_per_job": round(redis_cpu / done * 1e6, 1) if done else None,
        "prefetch": env.get("dramatiq_queue_prefetch", "default"),
    }
