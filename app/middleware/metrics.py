"""Prometheus metrics of job executions, right with `--processes N` and several replicas.

Each worker process writes prometheus-client's multiprocess files into a directory private to
this run of `dramatiq` (one per main process, under METRICS_DIR, which is private to the
replica); one forked exposition process serves them all on METRICS_PORT. Directories of runs
whose main process is gone are wiped at boot, and live gauges of dead processes are dropped
at every scrape, so a SIGKILLed process does not leave a job "in progress" forever.
"""

from __future__ import annotations

import bisect
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware

from app.broker.enqueue import RUNNABLE_AT
from app.broker.messages import FetchedMessage, delivery_key, job_queue
from app.errors import JobCanceled
from app.pid import current_pid
from app.settings import Settings, hand_to_prometheus_client

OUTCOMES = ("succeeded", "retried", "failed", "skipped")
#: How often a worker process writes its metric updates to its metrics file.
WRITE_INTERVAL_S = 0.25
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


def run_directory(base: Path, main_pid: int) -> Path:
    """The metrics directory of the `dramatiq` run whose main process is `main_pid`."""
    return base / f"run-{main_pid}-{_start_time(main_pid)}"


def _start_time(pid: int) -> str:
    # The start time tells a live process from an earlier one with the same (reused) pid.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def _run_is_alive(run: Path) -> bool:
    try:
        _, pid, start = run.name.split("-", 2)
        return _start_time(int(pid)) == start and start != "0"
    except ValueError:
        return False


def prepare_run_directory(base: Path, main_pid: int) -> Path:
    """Create this run's directory and wipe those of runs that have ended."""
    base.mkdir(parents=True, exist_ok=True)
    run = run_directory(base, main_pid)
    run.mkdir(exist_ok=True)
    for other in base.glob("run-*"):
        if other != run and not _run_is_alive(other):
            shutil.rmtree(other, ignore_errors=True)
    return run


def _use_multiprocess_dir(run: Path) -> None:
    hand_to_prometheus_client(run)
    from prometheus_client import values

    # Value storage in the files (prometheus_client may have been imported before the directory
    # was known), with the process id remembered rather than asked for on every update.
    values.ValueClass = values.MultiProcessValue(process_identifier=current_pid)


class WorkerMetrics(Middleware):
    """Counts each execution once by outcome; times duration and wait; tracks jobs in progress."""

    def __init__(self, *, settings: Settings) -> None:
        self.logger = get_logger(__name__, type(self))
        self.settings = settings
        self.enabled = False
        self._started: dict[str, float] = {}
        self._by_job: dict[tuple[str, str], _Series] = {}
        self._pending = PendingUpdates()
        self._lock = threading.Lock()

    @property
    def forks(self) -> list[Any]:
        return [serve_worker_metrics] if self.settings.metrics_port else []

    def after_process_boot(self, broker: Broker) -> None:
        run = prepare_run_directory(self.settings.metrics_dir, os.getppid())
        _use_multiprocess_dir(run)
        import prometheus_client as prom

        prom.disable_created_metrics()

        registry = prom.CollectorRegistry()
        labels = ("job", "queue")
        self.processed = prom.Counter(
            "taskqueue_jobs_processed",
            "Job executions by outcome: succeeded, retried (another attempt scheduled), failed (for good), skipped.",
            (*labels, "outcome"),
            registry=registry,
        )
        self.duration = prom.Histogram(
            "taskqueue_job_duration_seconds",
            "Time a job execution took.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.wait = prom.Histogram(
            "taskqueue_job_wait_seconds",
            "Time from when a job became runnable to when an execution started.",
            labels,
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.in_progress = prom.Gauge(
            "taskqueue_jobs_in_progress",
            "Job executions running now.",
            labels,
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.log_errors = prom.Counter(
            "taskqueue_outcome_log_errors",
            "Writes of the outcome log to Redis that failed (the jobs themselves were unaffected).",
            registry=registry,
        )
        for actor_name in broker.get_declared_actors():
            queue = broker.get_actor(actor_name).queue_name
            for outcome in OUTCOMES:
                self.processed.labels(actor_name, queue, outcome)
            self.in_progress.labels(actor_name, queue)
            self.duration.labels(actor_name, queue)
            self.wait.labels(actor_name, queue)
        self.enabled = True
        threading.Thread(target=self._write_pending, name="metrics-writer", daemon=True).start()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        if self.enabled:
            from prometheus_client import multiprocess

            self._pending.write()
            multiprocess.mark_process_dead(os.getpid())

    def _write_pending(self) -> None:
        while True:
            time.sleep(WRITE_INTERVAL_S)
            self._pending.write()

    def count_log_error(self) -> None:
        if self.enabled:
            self.log_errors.inc()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        if not self.enabled:
            return
        series = self._series(message.actor_name, job_queue(message))
        now = time.time()
        runnable_at = message.options.get(RUNNABLE_AT, message.message_timestamp)
        self._pending.observe(series.wait, max(0.0, now - int(runnable_at) / 1000))
        self._pending.add(series.in_progress, 1)
        self._started[delivery_key(message)] = time.perf_counter()

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if not self.enabled:
            return
        if isinstance(exception, JobCanceled):
            outcome = "canceled"  # stopped on its cancel: not a failure
        else:
            outcome = "succeeded" if exception is None else "failed" if message.failed else "retried"
        self._finish(message, outcome)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        if isinstance(message, FetchedMessage) and message.unstarted:
            return  # kept from starting (paused, canceled): neither a run nor a skip
        if self.enabled:
            self._finish(message, "failed" if message.failed else "skipped")

    def _finish(self, message: MessageProxy, outcome: str) -> None:
        job, queue = message.actor_name, job_queue(message)
        series = self._series(job, queue)
        started = self._started.pop(delivery_key(message), None)
        if started is not None:
            self._pending.observe(series.duration, time.perf_counter() - started)
            self._pending.add(series.in_progress, -1)
        processed = series.processed.get(outcome)
        if processed is None:
            processed = series.processed[outcome] = self.processed.labels(job, queue, outcome)
        self._pending.add(processed, 1)

    def _series(self, job: str, queue: str) -> _Series:
        # A job type's labelled children, looked up once: `labels()` costs more than the update.
        series = self._by_job.get((job, queue))
        if series is None:
            series = _Series(
                wait=self.wait.labels(job, queue),
                in_progress=self.in_progress.labels(job, queue),
                duration=self.duration.labels(job, queue),
                processed={},
            )
            self._by_job[(job, queue)] = series
        return series


class PendingUpdates:
    """Metric updates added up in memory, written to the metrics files every WRITE_INTERVAL_S.

    In multiprocess mode every update of a metric is a locked write to a memory-mapped file: a
    no-op job made seven of them, about 40 µs of its cost. Scrapes come seconds apart, so the
    figures may lag by WRITE_INTERVAL_S (and a process killed outright loses that much)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._amounts: dict[Any, float] = {}  # counter or gauge child -> amount to add
        self._observed: dict[Any, list[float]] = {}  # histogram child -> count per bucket, then the sum

    def add(self, child: Any, amount: float) -> None:
        with self._lock:
            self._amounts[child] = self._amounts.get(child, 0) + amount

    def observe(self, child: Any, value: float) -> None:
        # Histogram.observe's effect: the first bucket whose bound is >= value, and the sum
        # (its bounds end with +Inf).
        bounds = child._upper_bounds
        with self._lock:
            series = self._observed.get(child)
            if series is None:
                series = self._observed[child] = [0] * len(bounds) + [0.0]
            series[bisect.bisect_left(bounds, value)] += 1
            series[-1] += value

    def write(self) -> None:
        with self._lock:
            amounts, self._amounts = self._amounts, {}
            observed, self._observed = self._observed, {}
        for child, amount in amounts.items():
            if amount:
                child.inc(amount)
        for child, series in observed.items():
            child._sum.inc(series[-1])
            for bucket, count in zip(child._buckets, series[:-1], strict=False):
                if count:
                    bucket.inc(count)


@dataclass(frozen=True)
class _Series:
    wait: Any
    in_progress: Any
    duration: Any
    processed: dict[str, Any]


def serve_worker_metrics() -> int:
    """The forked exposition process: serves the metrics of every process of this run."""
    settings = Settings.from_env()
    run = prepare_run_directory(settings.metrics_dir, os.getppid())
    _use_multiprocess_dir(run)
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

    class LiveProcessesCollector(MultiProcessCollector):
        def collect(self):  # type: ignore[no-untyped-def]
            for path in run.glob("gauge_live*_*.db"):
                pid = int(path.stem.rsplit("_", 1)[1])
                if not Path(f"/proc/{pid}").exists():
                    mark_process_dead(pid, str(run))
            return super().collect()

    registry = CollectorRegistry()
    LiveProcessesCollector(registry, path=str(run))
    start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    get_logger(__name__, "serve_worker_metrics").info(
        "Serving worker metrics on %s:%d/metrics", settings.metrics_host, settings.metrics_port
    )
    while True:
        time.sleep(3600)
