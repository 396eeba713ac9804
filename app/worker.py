"""The worker: one broker, built from the settings, with our middleware, and the declared job
types bound to it as Dramatiq actors. `dramatiq app.actors` gets here through app/actors/."""

from __future__ import annotations

import functools
import logging
from typing import Any

import dramatiq
from dramatiq.logging import get_logger
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    ShutdownNotifications,
    TimeLimit,
)
from periodiq import PeriodiqMiddleware

from app.broker.broker import TaskQueueBroker
from app.broker.enqueue import Enqueuer
from app.connection.clients import check_cluster_mode, make_shards
from app.connection.shards import Shards
from app.connection.worker_writes import ShardedWrites
from app.jobs import JobContext, JobRegistry, JobType
from app.keys import Keys
from app.logs import configure_logging
from app.middleware.current_job import CurrentJob, current_jobs
from app.middleware.drain import Drain
from app.middleware.liveness import Liveness
from app.middleware.metrics import WorkerMetrics
from app.middleware.outcomes import OutcomeRecorder
from app.middleware.process_group import OwnProcessGroup
from app.middleware.retries import DurableRetries
from app.middleware.start_gate import StartGate
from app.outcomes.log import OutcomeLog
from app.outcomes.result import encode_result
from app.scheduler import bind_schedules
from app.schedules import load_schedules
from app.settings import Settings

#: periodiq skips a message of a job type declared `periodic=` handled later than this after its
#: tick: one that waited behind a backlog or a worker outage must still run, so allow most of a
#: day. (The schedules of SCHEDULES_FILE enqueue ordinary jobs, which periodiq never skips.)
PERIODIC_SKIP_DELAY_S = 23 * 3600


def build_middleware(settings: Settings, shards: Shards, log: OutcomeLog, writes: ShardedWrites) -> list[Middleware]:
    """The stack, in order. After-hooks run in reverse, so our recorders sit *before* the
    retries middleware: they run after it and see its verdict (retry scheduled or dead)."""
    metrics = WorkerMetrics(settings=settings)
    current_job = CurrentJob(log=log, writes=writes, on_write_error=metrics.count_log_error)
    return [
        OwnProcessGroup(),
        AgeLimit(),
        TimeLimit(time_limit=settings.job_time_limit_ms),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        CurrentMessage(),
        # Before anything records a start: a paused or canceled job goes no further.
        StartGate(shards=shards, current_job=current_job),
        # Early: its handle is there for the others' hooks, and its after-hooks run last.
        current_job,
        metrics,
        PeriodiqMiddleware(skip_delay=PERIODIC_SKIP_DELAY_S),
        OutcomeRecorder(
            log=log,
            writes=writes,
            max_crash_deliveries=settings.max_crash_deliveries,
            on_write_error=metrics.count_log_error,
        ),
        Liveness(heartbeat_timeout_ms=settings.heartbeat_timeout_ms),
        Drain(),
        DurableRetries(
            max_retries=settings.max_retries,
            min_backoff=settings.retry_min_backoff_ms,
            max_backoff=settings.retry_max_backoff_ms,
            enqueue_deadline_ms=settings.retry_enqueue_deadline_ms,
        ),
    ]


def create_broker(settings: Settings, registry: JobRegistry) -> TaskQueueBroker:
    """The broker for these settings, with our middleware, not yet connected."""
    keys = Keys.root(settings.namespace, cluster=settings.redis_cluster)
    log = OutcomeLog.for_settings(keys, settings)
    shards = make_shards(settings, keys)
    writes = ShardedWrites(shards)
    return TaskQueueBroker(
        settings=settings,
        keys=keys,
        enqueuer=Enqueuer(registry=registry, keys=keys, log=log, settings=settings),
        shards=shards,
        writes=writes,
        middleware=build_middleware(settings, shards, log, writes),
    )


def bind(registry: JobRegistry, broker: TaskQueueBroker) -> dict[str, dramatiq.Actor[Any, Any]]:
    """Each declared job type as an actor of `broker`, its function given the broker's context."""
    jobs = current_jobs(broker)
    context = JobContext(
        settings=broker.settings,
        client=broker.client,
        keys=broker.keys,
        shards=broker.shards,
        registry=registry,
        **({"current_job": jobs.current} if jobs is not None else {}),
    )
    keep_results_quietly()
    return {job_type.name: _actor(job_type, broker, context) for job_type in registry}


def _actor(job_type: JobType, broker: TaskQueueBroker, context: JobContext) -> dramatiq.Actor[Any, Any]:
    @functools.wraps(job_type.fn)
    def run(job_id: str | None = None, data: dict[str, Any] | None = None) -> Any:
        # periodiq sends a periodic job's message with no arguments; the API and the producer
        # with (job_id, data).
        result = job_type.fn(job_id or "", data or {}, context)
        # A result that cannot be kept fails the job here, at once (InvalidResult is a
        # PermanentJobError); the outcome recorder writes the rest with `succeeded`.
        encode_result(result, max_bytes=context.settings.result_max_bytes)
        return result

    actor: dramatiq.Actor[Any, Any] = dramatiq.actor(  # type: ignore[call-overload]
        run,
        broker=broker,
        actor_name=job_type.name,
        queue_name=job_type.queue,
        throws=job_type.throws,
        **job_type.options,
    )
    return actor


class _ResultsAreKept(logging.Filter):
    """Drops Dramatiq's warning that an actor's return value is discarded for want of its Results
    middleware: ours are kept, in the job's record (app/middleware/outcomes.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "haven't added the Results middleware" not in record.getMessage()


_RESULTS_ARE_KEPT = _ResultsAreKept()


def keep_results_quietly() -> None:
    """Silence Dramatiq's warning, for every job that returns a value, that the value is discarded."""
    get_logger(dramatiq.worker.__name__, dramatiq.worker.WorkerThread).addFilter(_RESULTS_ARE_KEPT)


def start(settings: Settings, registry: JobRegistry) -> TaskQueueBroker:
    """The worker process's one broker, set as Dramatiq's, with every job type bound to it, and
    every schedule of SCHEDULES_FILE, checked, as a periodic actor (periodiq's; workers get no
    message for those)."""
    configure_logging(settings)
    schedules = load_schedules(settings, registry)
    broker = create_broker(settings, registry)
    check_cluster_mode(broker.client, settings)
    dramatiq.set_broker(broker)
    bind(registry, broker)
    bind_schedules(schedules, broker)
    return broker
