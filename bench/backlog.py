"""A high-priority job behind a backlog of normal ones: how soon it starts, and how many of the
backlog's jobs start before it.

Our worker (`dramatiq bench.ours`, every middleware) runs throughout. Two cases:

- resumed: with the queue paused (its entry in the `paused` hash, as POST /queues/{name}/pause
  writes it), `backlog` normal jobs are enqueued, then one high job; then the queue is resumed
  (the entry removed and the idle consumers woken, as a resume does). Measured from the resume.
- busy: the worker is draining a larger backlog when, with `backlog` normal jobs still queued,
  one high job is enqueued. Measured from that enqueue.

The backlog's jobs count their starts in a Redis counter; the high job records its start time
and the counter when it starts. A normal job enqueued last would wait for the whole backlog.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from app.broker.enqueue import WAKEUP_TOKENS, WAKEUP_TTL_SECONDS
from app.keys import Keys
from bench.context import Context, wait_until
from bench.jobs import OurSender
from bench.keys import BACKLOG, BACKLOG_STARTED, BENCH_QUEUE, HIGH_PROBE, HIGH_STARTS
from bench.workers import OURS

CASES = ("resumed", "busy")
#: The busy case enqueues this much more than `backlog`, and sends the high job once the queue is
#: down to `backlog`.
BUSY_EXTRA = 0.5


def high_behind_backlog(
    context: Context, processes: int, threads: int, *, backlog: int, runs: int, case: str
) -> dict[str, Any]:
    """Median time (ms) from the resume (or the enqueue) to the high job's start over `runs`
    runs, and the backlog jobs that started in between (each run, median, most)."""
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}")
    results = [_one(context, processes, threads, backlog, case) for _ in range(runs)]
    millis = [result["ms"] for result in results]
    before = [result["started_before"] for result in results]
    return {
        "case": case,
        "backlog": backlog,
        "p50_ms": round(statistics.median(millis), 2),
        "max_ms": round(max(millis), 2),
        "started_before_median": statistics.median(before),
        "started_before_max": max(before),
        "runs": results,
    }


def _one(context: Context, processes: int, threads: int, backlog: int, case: str) -> dict[str, Any]:
    context.flush()
    keys = Keys(namespace=context.settings.namespace)
    client = context.client
    sender = OurSender(context.settings, client)
    normal_list = keys.priority_queue(BENCH_QUEUE)
    worker = context.worker(OURS, processes, threads)
    try:
        # A worker logs that it is ready before its consumers have settled: one job goes first.
        sender.send(BACKLOG, 2)
        wait_until(lambda: int(client.get(BACKLOG_STARTED) or 0) >= 2, timeout=60, message="the warm-up jobs")
        client.delete(BACKLOG_STARTED)
        client.hset(keys.paused(), BENCH_QUEUE, int(time.time() * 1000))
        if case == "resumed":
            sender.send(BACKLOG, backlog)
            (job_id,) = sender.send(HIGH_PROBE, 1, ("high",))
            time.sleep(0.3)  # the consumers woken by the enqueues settle on the paused queue
            queued = int(client.llen(normal_list))
            counted_from, at = 0, time.time()
            _resume(client, keys)
        else:
            sender.send(BACKLOG, int(backlog * (1 + BUSY_EXTRA)))
            _resume(client, keys)
            wait_until(lambda: client.llen(normal_list) <= backlog, timeout=120, interval=0.002, message="the drain")
            queued = int(client.llen(normal_list))
            counted_from, at = int(client.get(BACKLOG_STARTED) or 0), time.time()
            (job_id,) = sender.send(HIGH_PROBE, 1, ("high",))
        wait_until(lambda: client.llen(HIGH_STARTS) >= 1, timeout=60, interval=0.005, message="the high job to start")
    finally:
        context.stop(worker)
    started_id, started_at, counted = client.lindex(HIGH_STARTS, 0).decode().split()
    assert started_id == job_id, (started_id, job_id)
    return {
        "ms": round((float(started_at) - at) * 1000, 2),
        "started_before": int(counted) - counted_from,
        "normal_queued": queued,
    }


def _resume(client: Any, keys: Keys) -> None:
    """What a resume does (app/connection/lua/resume.lua): forget the pause, wake idle consumers."""
    wakeup = keys.wakeup(BENCH_QUEUE)
    with client.pipeline(transaction=True) as pipeline:
        pipeline.hdel(keys.paused(), BENCH_QUEUE)
        pipeline.lpush(wakeup, *([1] * WAKEUP_TOKENS))
        pipeline.ltrim(wakeup, 0, WAKEUP_TOKENS - 1)
        pipeline.expire(wakeup, WAKEUP_TTL_SECONDS)
        pipeline.execute()
