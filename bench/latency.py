"""Enqueue-to-start latency: probe jobs sent one at a time; each records when it started.

Idle: nothing else is queued; probes are 100-200 ms apart, so every probe finds the worker
waiting. Under load: a background sender keeps the worker busy with no-op jobs at a fixed
rate while the probes go through the same queue.
"""

from __future__ import annotations

import math
import random
import statistics
import threading
import time
from typing import Any

from bench.context import Context, wait_until
from bench.jobs import OurSender, PlainSender
from bench.keys import NOOP, PROBE, STARTS
from bench.workers import OURS

LOAD_TICK_S = 0.01


def latency(
    context: Context,
    module: str,
    processes: int,
    threads: int,
    *,
    samples: int,
    gap_s: tuple[float, float],
    load_per_s: float = 0.0,
) -> dict[str, Any]:
    """p50/p99 in ms from just before the send to the start of the job, measured in the worker."""
    context.flush()
    sender_class = OurSender if module == OURS else PlainSender
    worker = context.worker(module, processes, threads)
    stop = threading.Event()
    loader = None
    try:
        _warm_up(context, sender_class)
        if load_per_s:
            # Its own connection: the probes' timing must not wait behind the load's writes.
            load_sender = sender_class(context.settings, context.redis.client())
            loader = threading.Thread(target=_load, args=(load_sender, load_per_s, stop), daemon=True)
            loader.start()
            time.sleep(0.5)
        sender = sender_class(context.settings, context.client)
        sent: dict[str, float] = {}
        for _ in range(samples):
            at = time.time()
            (job_id,) = sender.send(PROBE)
            sent[job_id] = at
            time.sleep(random.uniform(*gap_s))
        wait_until(lambda: context.client.llen(STARTS) >= samples, timeout=60, message="every probe to start")
    finally:
        stop.set()
        if loader:
            loader.join(timeout=10)
        context.stop(worker)
    started = dict(line.decode().split() for line in context.client.lrange(STARTS, 0, -1))
    millis = sorted((float(started[job_id]) - at) * 1000 for job_id, at in sent.items())
    return {
        "p50_ms": round(statistics.median(millis), 2),
        "p99_ms": round(_percentile(millis, 99), 2),
        "max_ms": round(millis[-1], 2),
        "samples": len(millis),
        "load_jobs_per_s": round(load_per_s),
    }


def _warm_up(context: Context, sender_class: type[OurSender | PlainSender]) -> None:
    """A worker logs that it is ready before its consumers have settled: the first job after a
    start can wait for that. The measurement is of a running, idle worker, so one job goes first."""
    sender = sender_class(context.settings, context.client)
    for _ in range(2):
        sender.send(PROBE)
    wait_until(lambda: context.client.llen(STARTS) >= 2, timeout=60, message="the warm-up jobs to start")
    context.client.delete(STARTS)
    time.sleep(0.3)


def _load(sender: OurSender | PlainSender, per_s: float, stop: threading.Event) -> None:
    owed, last = 0.0, time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        owed += (now - last) * per_s
        last = now
        if owed >= 1:
            count = int(owed)
            sender.send(NOOP, count) if count > 1 else sender.send(NOOP)
            owed -= count
        stop.wait(LOAD_TICK_S)


def _percentile(sorted_values: list[float], percent: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return sorted_values[rank - 1]
