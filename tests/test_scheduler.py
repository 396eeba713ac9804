"""Schedules run by periodiq: ticks in the schedule's zone, and one enqueue per tick however many
schedulers send it (two threads on a real Redis; two real periodiq processes and a worker)."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import pendulum
import redis

from app.broker.enqueue import Enqueuer
from app.cron import Cron
from app.jobs import load_job_types
from app.keys import Keys
from app.outcomes.log import OutcomeLog
from app.scheduler import SCHEDULE_RUN_TTL_S, Ticks, run_once
from app.schedules import Schedule
from app.settings import Settings
from tests.support.redis_state import packed_of, record_fields
from tests.support.services import RedisServer, Stack, wait_until

KEYS = Keys()
REGISTRY = load_job_types()


def schedule(cron: str = "0 9 * * sun", timezone: str = "America/New_York", name: str = "weekly") -> Schedule:
    return Schedule(name=name, cron=Cron.parse(cron), timezone=timezone, job_name="cleanupJob", data={})


def test_ticks_are_computed_in_the_schedules_zone_sundays_included() -> None:
    ticks = Ticks(schedule())
    # periodiq hands over its local `now` (here Tokyo's): the same instant, another zone.
    sunday_9_new_york = pendulum.datetime(2024, 6, 2, 22, 0, 0, tz="Asia/Tokyo")
    assert ticks.validate(sunday_9_new_york)
    assert ticks.validate(sunday_9_new_york.add(seconds=1))  # woken a little late: the same run
    assert not ticks.validate(sunday_9_new_york.add(minutes=1))
    assert not ticks.validate(pendulum.datetime(2024, 6, 2, 9, 0, 0, tz="UTC"))
    nxt = ticks.next_valid_date(sunday_9_new_york)
    assert nxt == pendulum.datetime(2024, 6, 9, 13, 0, 0, tz="UTC")
    # What periodiq does with it: subtract its own now and sleep that long.
    assert (nxt - sunday_9_new_york).total_seconds() == 7 * 86_400
    assert str(ticks) == "0 9 * * sun (America/New_York)"


def test_ticks_of_a_seconds_schedule_are_to_the_second() -> None:
    ticks = Ticks(schedule("*/2 * * * * *", "UTC"))
    assert ticks.run_at(pendulum.datetime(2024, 1, 1, 0, 0, 4, 300_000)) == datetime(2024, 1, 1, 0, 0, 4, tzinfo=UTC)
    assert ticks.run_at(pendulum.datetime(2024, 1, 1, 0, 0, 5)) is None


def test_ticks_across_the_night_clocks_go_back() -> None:
    ticks = Ticks(schedule("30 2 * * *", "Europe/Paris"))
    first = pendulum.datetime(2024, 10, 27, 0, 30, tz="UTC")  # 02:30 CEST
    second = pendulum.datetime(2024, 10, 27, 1, 30, tz="UTC")  # 02:30 CET, the same wall time again
    assert ticks.validate(first) and not ticks.validate(second)
    assert ticks.next_valid_date(first) == pendulum.datetime(2024, 10, 28, 1, 30, tz="UTC")


def _enqueuer(redis_url: str) -> Enqueuer:
    settings = Settings.from_env({"REDIS_URL": redis_url})
    return Enqueuer(registry=REGISTRY, keys=KEYS, log=OutcomeLog(keys=KEYS, retention_seconds=3600), settings=settings)


def test_two_schedulers_sending_one_tick_enqueue_it_once(redis_server: RedisServer) -> None:
    enqueuer, run_at = _enqueuer(redis_server.url), datetime(2024, 6, 2, 13, tzinfo=UTC)
    results: list[tuple[str, bool]] = []
    start = threading.Barrier(8)

    def scheduler() -> None:
        client = redis_server.client()
        start.wait()
        results.append(run_once(schedule(), run_at, enqueuer=enqueuer, keys=KEYS, client=client))
        client.close()

    threads = [threading.Thread(target=scheduler) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(enqueued for _, enqueued in results) == [False] * 7 + [True]
    assert len({job_id for job_id, _ in results}) == 1
    job_id = results[0][0]
    client = redis_server.client()
    run_ms = int(run_at.timestamp() * 1000)
    # One job, a normal one: its record, its message on its queue; the run's key expires.
    assert client.zcard(KEYS.all_index("cleanupJob")) == 1
    assert client.hget(KEYS.job(job_id), "state") == b"queued"
    assert client.llen(KEYS.queue("default")) == 1
    assert client.get(KEYS.schedule_run("weekly", run_ms)) == job_id.encode()
    assert 0 < client.ttl(KEYS.schedule_run("weekly", run_ms)) <= SCHEDULE_RUN_TTL_S
    last = json.loads(client.hget(KEYS.schedules(), "weekly") or b"{}")
    assert last["runAt"] == run_ms and last["jobId"] == job_id

    # The next tick is another job; a late sender of the earlier tick neither enqueues nor
    # puts the last run back.
    later, enqueued = run_once(schedule(), run_at.replace(day=9), enqueuer=enqueuer, keys=KEYS, client=client)
    assert enqueued and later != job_id
    assert run_once(schedule(), run_at, enqueuer=enqueuer, keys=KEYS, client=client) == (job_id, False)
    assert json.loads(client.hget(KEYS.schedules(), "weekly") or b"{}")["jobId"] == later
    assert client.zcard(KEYS.all_index("cleanupJob")) == 2
    client.close()


_RUN = re.compile(
    r"schedule every-second: run at (\S+) (enqueued as job|was already enqueued by another scheduler, as job) (\w+)"
)


def test_two_periodiq_schedulers_and_a_worker_run_each_tick_once(
    stack: Stack, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # A seconds field makes a tick every second: two schedulers contend for several of them soon.
    schedules = tmp_path / "schedules.toml"
    schedules.write_text(
        '[[schedules]]\nname = "every-second"\ncron = "* * * * * *"\ntimezone = "Asia/Kathmandu"\n'
        'jobName = "cleanupJob"\n'
    )
    env = {"SCHEDULES_FILE": str(schedules)}
    stack.worker(threads=2, **env)
    first, second = stack.scheduler("scheduler-1", **env), stack.scheduler("scheduler-2", **env)

    def runs() -> list[tuple[str, str, str, str]]:
        logs = (("1", first.log_path.read_text()), ("2", second.log_path.read_text()))
        return [(name, *match.groups()) for name, log in logs for match in _RUN.finditer(log)]

    def contended() -> set[str]:
        by_tick: dict[str, set[str]] = {}
        for name, tick, _, _ in runs():
            by_tick.setdefault(tick, set()).add(name)
        return {tick for tick, names in by_tick.items() if len(names) == 2}

    wait_until(lambda: len(contended()) >= 3, timeout=40, message="both schedulers to send 3 of the same ticks")
    first.stop()
    second.stop()
    assert "Traceback" not in first.log_path.read_text() + second.log_path.read_text()

    found = runs()
    enqueued = [(tick, job_id) for _, tick, verdict, job_id in found if verdict.startswith("enqueued")]
    ticks = [tick for tick, _ in enqueued]
    assert len(ticks) == len(set(ticks)), f"a tick was enqueued twice: {found}"
    # Each contended tick: one enqueued it, the other was told which job it is.
    jobs_of = dict(enqueued)
    for _, tick, _, job_id in found:
        assert jobs_of[tick] == job_id
    # No job besides these: the all index holds those not yet succeeded, the buckets the others.
    assert redis_client.zcard(KEYS.all_index("cleanupJob")) + len(packed_of(redis_client, KEYS, "cleanupJob")) == len(
        enqueued
    )
    # Ticks are in the schedule's zone (Kathmandu is UTC+05:45), and the worker runs each job.
    assert all(tick.endswith("+05:45") for tick in ticks), ticks
    wait_until(
        lambda: all(record_fields(redis_client, KEYS, job_id).get("state") == "succeeded" for _, job_id in enqueued),
        message="the worker to run every scheduled job",
    )
