"""The schedules, run by periodiq: each schedule is a periodic actor of the broker whose ticks
periodiq computes with `Ticks` (in the schedule's time zone), and whose send enqueues the
schedule's job, at most once per tick however many schedulers are running.

Where the lock is taken: here, in the scheduler process, as periodiq sends the tick, and in the
same Lua call as the job's enqueue (app/connection/lua/schedule_run.lua). Not in a small periodic
actor that a worker would run to enqueue the real job: that extra message would wait behind a
backlog, be skipped by periodiq's middleware past its skip_delay, and could run twice after a
worker crash; and a lock taken apart from the enqueue could be taken for a run never enqueued.
Taken with the enqueue, a tick is either enqueued once, with its job's record, or not at all.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import dramatiq
import pendulum
import redis

from app.broker.enqueue import Enqueuer
from app.connection.clients import translated
from app.errors import BrokerUnavailable
from app.keys import Keys
from app.outcomes.record import now_ms
from app.schedules import Schedule

if TYPE_CHECKING:
    from app.broker.broker import TaskQueueBroker

logger = logging.getLogger(__name__)

#: How long a tick's key is kept: far beyond any clock skew or delay between two schedulers
#: sending the same tick, short enough that an every-minute schedule keeps about 1,440 keys.
SCHEDULE_RUN_TTL_S = 86_400
#: The prefix of a schedule's actor name (the schedule's name follows).
ACTOR_PREFIX = "schedule:"


class Ticks:
    """A schedule's runs as periodiq's Scheduler asks for them of an actor's `periodic` option:
    `validate(now)`, whether `now` (to the minute, or the second) is a run; `next_valid_date(now)`,
    the next run. periodiq's own cron works in the process's local time and never fires on
    Sundays; this computes in the schedule's zone (app/cron.py)."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.resolution_s = 1 if schedule.cron.every_second else 60

    def run_at(self, now: datetime) -> datetime | None:
        """The run `now` falls in (floored to the minute, or the second), or None if it is none."""
        floored = datetime.fromtimestamp(int(now.timestamp()) // self.resolution_s * self.resolution_s, UTC)
        found = self.schedule.next_run(floored - timedelta(microseconds=1))
        # Compared as timestamps: `==` between zones is False for an ambiguous wall time.
        return floored if found.timestamp() == floored.timestamp() else None

    def validate(self, now: datetime) -> bool:
        return self.run_at(now) is not None

    def next_valid_date(self, now: datetime) -> pendulum.DateTime:
        return pendulum.instance(self.schedule.next_run(now).astimezone(UTC))

    def __str__(self) -> str:
        return f"{self.schedule.cron.expression} ({self.schedule.timezone})"


def run_once(
    schedule: Schedule, run_at: datetime, *, enqueuer: Enqueuer, keys: Keys, client: redis.Redis
) -> tuple[str, bool]:
    """Enqueue the schedule's job for its run at `run_at`, unless a scheduler already has: the
    job's id, and whether this call enqueued it. BrokerUnavailable if Redis does not answer.
    `keys` and `client`: those of the job's queue (on a cluster the run's lock and the schedule's
    last run are in its queue's keyspace, written in the enqueue's one call)."""
    run_at_ms = int(run_at.timestamp() * 1000)
    message, _ = enqueuer.message(schedule.job_name, schedule.data)
    keys = keys.for_queue(message.queue_name)
    last_run = {"runAt": run_at_ms, "jobId": message.message_id, "enqueuedAt": now_ms()}
    _, command = enqueuer.command_scheduled(
        message,
        run_key=keys.schedule_run(schedule.name, run_at_ms),
        ttl_seconds=SCHEDULE_RUN_TTL_S,
        last_runs=keys.schedules(),
        schedule=schedule.name,
        last_run_json=json.dumps(last_run, separators=(",", ":")),
    )
    with translated():
        existing = client.execute_command(*command)
    if existing:
        return existing.decode() if isinstance(existing, bytes) else str(existing), False
    return message.message_id, True


class ScheduleActor(dramatiq.Actor[..., None]):
    """A schedule as the periodic actor periodiq sends at each tick; sending it enqueues the
    schedule's job (`run_once`) instead of a message for this actor."""

    def __init__(self, schedule: Schedule, broker: TaskQueueBroker) -> None:
        self.schedule = schedule
        self.ticks = Ticks(schedule)
        super().__init__(
            _sent_by_hand,
            broker=broker,
            actor_name=ACTOR_PREFIX + schedule.name,
            queue_name=broker.enqueuer.registry.get(schedule.job_name).queue,
            priority=0,
            options={"periodic": self.ticks},
        )
        self.task_broker = broker

    def send_with_options(
        self,
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        delay: timedelta | int | None = None,
        **options: Any,
    ) -> dramatiq.Message[None]:
        # periodiq calls send_with_options(scheduled_at=str(<the tick, in local time>)).
        scheduled = pendulum.parse(str(options.get("scheduled_at") or pendulum.now()))
        run_at = self.ticks.run_at(scheduled) if isinstance(scheduled, datetime) else None
        if run_at is None:
            logger.warning("schedule %s: %s is not one of its runs; nothing enqueued", self.schedule.name, scheduled)
            return self.message()
        broker, shown = self.task_broker, run_at.astimezone(self.schedule.zone).isoformat()
        try:
            shard = broker.shard(self.queue_name)
            job_id, enqueued = run_once(
                self.schedule, run_at, enqueuer=broker.enqueuer, keys=shard.keys, client=shard.client
            )
        except (BrokerUnavailable, redis.RedisError) as error:
            # periodiq does not catch up missed ticks: this run is lost, the next ones are not.
            logger.error("schedule %s: run at %s missed, Redis did not answer: %s", self.schedule.name, shown, error)
            return self.message()
        if enqueued:
            logger.info("schedule %s: run at %s enqueued as job %s", self.schedule.name, shown, job_id)
        else:
            logger.info(
                "schedule %s: run at %s was already enqueued by another scheduler, as job %s",
                self.schedule.name,
                shown,
                job_id,
            )
        return self.message()


def _sent_by_hand(*args: Any, **kwargs: Any) -> None:
    """What a worker runs if a message for a schedule's actor ever reaches one (nothing sends
    such messages: a tick enqueues the schedule's job): nothing."""
    logger.warning("a message for a schedule's actor was sent by hand: ignored (send its job instead)")


def bind_schedules(schedules: tuple[Schedule, ...], broker: TaskQueueBroker) -> list[ScheduleActor]:
    """Each schedule as a periodic actor of `broker`, for `periodiq app.actors` to find."""
    now = datetime.now(UTC)
    actors = []
    for schedule in schedules:
        actors.append(ScheduleActor(schedule, broker))
        logger.info(
            "schedule %s: %s %s at %r (%s), next run %s",
            schedule.name,
            schedule.job_name,
            json.dumps(schedule.data),
            schedule.cron.expression,
            schedule.timezone,
            schedule.next_run(now).isoformat(),
        )
    return actors
