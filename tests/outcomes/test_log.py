"""The outcome log's writes (app/outcomes/log.py and the scripts it loads), on fakeredis: what
each leaves in Redis, written out as the keys and values expected.

`running` and `succeeded` (a worker's two writes per job) and a new job's enqueue (the API's and
the producer's) are Lua scripts, their only implementation: each test seeds a state, runs the
write and compares every key with its expected contents.
"""

from __future__ import annotations

import json
from typing import Any

import dramatiq
import fakeredis
import pydantic
import pytest
import redis

from app.broker.enqueue import WAKEUP_TOKENS, WAKEUP_TTL_SECONDS, Enqueuer
from app.connection.commands import coalesce
from app.jobs import JobRegistry, JobType
from app.keys import Keys
from app.outcomes.log import ENQUEUE_SCRIPT, MINUTE_COUNTS_TTL_SECONDS, OutcomeLog
from app.outcomes.record import (
    HISTORY_ENTRY_FIELDS,
    HISTORY_ERROR_CHARS,
    HISTORY_TRACEBACK_CHARS,
    MAX_HISTORY,
    NEW_JOB_FIELDS,
    QUEUED_FIELDS,
    decode_record,
)
from app.settings import Settings
from tests.support.redis_state import Entry, dump, record_fields, run_multi

KEYS = Keys()
RETENTION_S = 3600
LOG = OutcomeLog(keys=KEYS, retention_seconds=RETENTION_S)
IDS = {"job_id": "j1", "job_name": "webhookJob"}
JOB = "taskqueue:job:j1"
AT = 1_700_000_000_000
#: Index scores are microseconds (index_score).
SCORE = AT * 1000


# ----- the expected contents -----
def record(**fields: Any) -> Entry:
    """A job record as `dump` shows it: a hash of text values that expires."""
    return ("hash", {name: str(value) for name, value in fields.items()}, True)


def index(*entries: tuple[str, int]) -> Entry:
    """A state index as `dump` shows it: (job id, score) pairs in Redis's order, no expiry."""
    ordered = sorted(entries, key=lambda entry: (entry[1], entry[0]))
    return ("zset", [(job_id, float(score)) for job_id, score in ordered], False)


def indexes(state: str, job_name: str, *entries: tuple[str, int]) -> dict[str, Entry]:
    """A state's global and per-job-type index, holding the same entries."""
    return {f"taskqueue:idx:{state}": index(*entries), f"taskqueue:idx:{state}:{job_name}": index(*entries)}


def seeded_record(state: str, executions: int = 1) -> Entry:
    """The record `seeded` writes: not expiring yet."""
    fields = {"state": state, "attempts": "1", "runAt": "5", "nextRetryAt": "6", "executions": str(executions)}
    return ("hash", fields, False)


def seeded(state: str) -> fakeredis.FakeRedis:
    """A record in `state`, listed in that state's indexes (score 1), with fields a transition
    must clear."""
    client = fakeredis.FakeRedis()
    client.hset(JOB, mapping={"state": state, "attempts": 1, "runAt": 5, "nextRetryAt": 6, "executions": 1})
    for key in indexes(state, "webhookJob"):
        client.zadd(key, {"j1": 1})
    assert dump(client) == {JOB: seeded_record(state), **indexes(state, "webhookJob", ("j1", 1))}
    return client


def assert_retention(client: fakeredis.FakeRedis, key: str) -> None:
    assert RETENTION_S - 5 < client.ttl(key) <= RETENTION_S, key


# ----- running -----
@pytest.mark.parametrize(
    ("state", "attempt", "kept"),
    [
        ("queued", 1, {}),
        ("queued", 2, {}),
        ("retrying", 2, {}),
        ("running", 1, {}),
        ("running", 2, {}),
        # Attempt 1 succeeded and attempt 2 starts: the script takes a job out of the queued and
        # retrying indexes only, so the succeeded ones keep their entry.
        ("succeeded", 2, indexes("succeeded", "webhookJob", ("j1", 1))),
    ],
)
def test_running_marks_the_attempt_started_and_moves_the_job_to_the_running_indexes(
    state: str, attempt: int, kept: dict[str, Entry]
) -> None:
    client = seeded(state)
    deliveries = client.execute_command(*LOG.running(queue="default", attempt=attempt, at_ms=AT, **IDS))
    assert deliveries == 1  # the first delivery of this attempt
    assert dump(client) == {
        # runAt and nextRetryAt cleared, the execution and the delivery counted.
        JOB: record(jobId="j1", jobName="webhookJob", queue="default", state="running", attempts=attempt,
                    startedAt=AT, updatedAt=AT, executions=2, deliveries=1),
        **indexes("running", "webhookJob", ("j1", SCORE)),
        **kept,
    }  # fmt: skip
    assert_retention(client, JOB)
    # Delivered again without finishing (its worker died): the count goes on.
    assert client.execute_command(*LOG.running(queue="default", attempt=attempt, at_ms=AT + 1, **IDS)) == 2


@pytest.mark.parametrize("state", ["succeeded", "failed", "skipped"])
def test_a_start_that_arrives_after_its_finish_only_counts_the_execution(state: str) -> None:
    """A worker posts a job's start without waiting for the reply; one Redis refused (a script
    not loaded yet) is sent again, possibly after the finish, which must stand."""
    client = seeded(state)
    assert client.execute_command(*LOG.running(queue="default", attempt=1, at_ms=AT, **IDS)) == 0
    assert dump(client) == {
        JOB: seeded_record(state, executions=2),
        **indexes(state, "webhookJob", ("j1", 1)),
    }


# ----- succeeded -----
#: Where a succeeded record of an id that carries no time ("j1") is packed (app/outcomes/packed.py).
BUCKET = "taskqueue:succeeded:0"


@pytest.mark.parametrize("attempt", [None, 3])
@pytest.mark.parametrize(
    ("state", "started"), [("running", False), ("queued", False), ("retrying", False), ("running", True)]
)
def test_succeeded_packs_the_record_into_its_bucket_out_of_every_index(
    state: str, started: bool, attempt: int | None
) -> None:
    client = seeded(state)
    for key in indexes("all", "webhookJob"):
        client.zadd(key, {"j1": 1})
    at = AT + 456
    args = {"duration_ms": 12, "at_ms": at, "attempt": attempt, "started": started, **IDS}
    assert client.execute_command(*LOG.succeeded(**args)) == 1
    # The attempt written when known; runAt left as it is (a start clears it, not a success).
    fields: dict[str, Any] = {
        "jobId": "j1", "jobName": "webhookJob", "state": "succeeded", "attempts": 1 if attempt is None else attempt,
        "runAt": 5, "executions": 1, "durationMs": 12, "finishedAt": at, "updatedAt": at, "deliveries": 0,
    }  # fmt: skip
    if started:
        # Left too: a start known to have been written cleared it (the seeded record has one).
        fields["nextRetryAt"] = 6
    assert record_fields(client, KEYS, "j1") == {name: str(value) for name, value in fields.items()}
    # The hash is gone, and whichever index held the job (running; queued or retrying unless known
    # to have started; all) holds it no more: its packed record is the field "j1" of its bucket,
    # which expires at the retention; the bucket is listed and counted. The minute's outcome counts
    # (the console's charts) count it, for a day and more.
    counts = f"taskqueue:stats:minute:{at // 60_000}"
    found = dump(client)
    kind, bucket, expires = found.pop(BUCKET)
    assert (kind, list(bucket), expires) == ("hash", ["j1"], True)
    assert found == {
        "taskqueue:succeeded-buckets": ("zset", [("0", 0.0)], False),
        "taskqueue:succeeded-sizes": ("hash", {"0": "1", "total": "1"}, False),
        counts: ("hash", {"succeeded": "1"}, True),
    }
    assert_retention(client, BUCKET)
    assert 24 * 3600 < client.ttl(counts) <= MINUTE_COUNTS_TTL_SECONDS
    # Delivered again (its worker died before the ack): its second success changes nothing.
    before = dump(client)
    assert client.execute_command(*LOG.succeeded(**{**args, "at_ms": at + 1_000, "duration_ms": 99})) == 0
    assert dump(client) == before


def test_writes_that_arrive_after_the_success_change_nothing() -> None:
    """A start sent again, or a late retrying (a worker does not wait for their replies), lands
    after the record was packed: no hash is made again, nothing is counted."""
    client = seeded("running")
    client.execute_command(*LOG.succeeded(duration_ms=1, at_ms=AT, attempt=1, started=True, **IDS))
    before = dump(client)
    assert client.execute_command(*LOG.running(queue="default", attempt=1, at_ms=AT + 1, **IDS)) == 0
    assert client.execute_command(*LOG.running(queue="default", attempt=2, at_ms=AT + 2, **IDS)) == 0
    assert client.execute_command(*retried(1, AT - 10)) == 0
    assert dump(client) == before and not client.exists(JOB)


# ----- a new job's enqueue -----
def new_message(job_id: str, job_name: str) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name="default", actor_name=job_name, args=(job_id, {"n": job_id}), kwargs={}, options={},
        message_id=job_id, message_timestamp=AT - 1,
    )  # fmt: skip


@pytest.mark.parametrize("jobs", [70, 1_500])
def test_the_enqueue_script_writes_each_new_job_and_what_jobs_share_once(
    monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    """New jobs of two job types, some delayed, in one merged ENQUEUE_SCRIPT call: each job's
    message, record and index entries, the wake-up tokens and the counts (1,500 jobs write in
    chunks: Lua unpacks at most about 8,000 values)."""
    enqueuer = Enqueuer(registry=JobRegistry(), keys=KEYS, log=LOG, settings=Settings(max_retries=5))
    delays: dict[str, int] = {f"job-{n}": 60_000 for n in range(3, jobs, 25)}
    items = [(f"job-{n}", "emailJob") for n in range(jobs)] + [("late", "webhookJob"), ("hook", "webhookJob")]
    delays["late"] = 30_000
    redis_ids = iter(f"r-{n}" for n in range(len(items)))
    monkeypatch.setattr("app.broker.enqueue.new_redis_id", lambda: next(redis_ids))
    calls = []
    for sequence, (job_id, job_name) in enumerate(items):
        calls += enqueuer.commands(new_message(job_id, job_name), delays.get(job_id), at_ms=AT, sequence=sequence)[1]
    (merged,) = coalesce(calls)
    assert merged[:2] == ("EVAL", ENQUEUE_SCRIPT)
    client = fakeredis.FakeRedis()
    assert client.execute_command(*merged) == len(items)

    # What each job's block wrote: its record (the fields of NEW_JOB_FIELDS; runAt if delayed),
    # its entries in the queued and "all" indexes (score: the batch's time, then its place in the
    # batch), its message on its queue (the delay queue if delayed).
    expected: dict[str, Any] = {}
    entries: dict[str, list[tuple[str, int]]] = {}
    queues: dict[str, list[str]] = {"default": [], "default.DQ": []}
    bodies: dict[str, dict[str, Any]] = {"default": {}, "default.DQ": {}}
    for sequence, (job_id, job_name) in enumerate(items):
        delay = delays.get(job_id)
        fields: dict[str, Any] = {
            "jobId": job_id, "jobName": job_name, "queue": "default", "state": "queued", "maxRetries": 5,
            "enqueuedAt": AT, "data": f'{{"n":"{job_id}"}}', "attempts": 0, "deliveries": 0, "updatedAt": AT,
            "executions": 0,
        }  # fmt: skip
        if delay is not None:
            fields["runAt"] = AT + delay
        # (priority only when not normal)
        assert set(fields) == set(NEW_JOB_FIELDS) - {"priority"} - ({"runAt"} if delay is None else set())
        expected[f"taskqueue:job:{job_id}"] = record(**fields)
        score = SCORE + sequence % 1000
        for key in ("taskqueue:idx:queued", "taskqueue:idx:all"):
            entries.setdefault(key, []).append((job_id, score))
            entries.setdefault(f"{key}:{job_name}", []).append((job_id, score))
        queue = "default" if delay is None else "default.DQ"
        redis_id = f"r-{sequence}"
        queues[queue].append(redis_id)
        options: dict[str, Any] = {"redis_message_id": redis_id, "runnable_at": AT + (delay or 0), "enqueued_at": AT}
        if delay is not None:
            options["eta"] = AT + delay
        bodies[queue][redis_id] = {
            "queue_name": queue, "actor_name": job_name, "args": [job_id, {"n": job_id}], "kwargs": {},
            "options": options, "message_id": job_id, "message_timestamp": AT - 1,
        }  # fmt: skip
    expected.update({key: index(*pairs) for key, pairs in entries.items()})
    for queue, redis_ids_on_it in queues.items():
        expected[f"dramatiq:{queue}"] = ("list", redis_ids_on_it, False)
        # A wake-up token per job, up to WAKEUP_TOKENS, on a list that expires.
        expected[f"taskqueue:wakeup:{queue}"] = ("list", ["1"] * min(len(redis_ids_on_it), WAKEUP_TOKENS), True)
    # What jobs share is counted once per key: the new jobs of each type and queue.
    expected["taskqueue:stats:enqueued"] = ("hash", {"emailJob|default": str(jobs), "webhookJob|default": "2"}, False)

    found = dump(client)
    for queue, expected_bodies in bodies.items():  # the message bodies, compared as JSON
        kind, stored, expires = found.pop(f"dramatiq:{queue}.msgs")
        assert (kind, expires) == ("hash", False)
        assert {redis_id: json.loads(body) for redis_id, body in stored.items()} == expected_bodies
    assert found == expected
    assert len(queues["default"]) > WAKEUP_TOKENS  # the trim was needed
    for queue in queues:
        assert 0 < client.ttl(f"taskqueue:wakeup:{queue}") <= WAKEUP_TTL_SECONDS
    for job_id, _ in items:
        assert_retention(client, f"taskqueue:job:{job_id}")


# ----- a finished job put back on its queue, and a message moved to its queue -----
class AnyData(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


def enqueuer_of(job_name: str) -> Enqueuer:
    registry = JobRegistry()
    registry.add(JobType(name=job_name, schema=AnyData, fn=lambda job_id, data, context: None))
    return Enqueuer(registry=registry, keys=KEYS, log=LOG, settings=Settings(max_retries=5))


def test_requeue_puts_the_job_back_on_its_queue_and_rewrites_its_record(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.broker.enqueue.now_ms", lambda: AT)
    monkeypatch.setattr("app.broker.enqueue.new_redis_id", lambda: "r-1")
    client = fakeredis.FakeRedis()
    failed = {
        "jobId": "j1", "jobName": "emailJob", "queue": "default", "state": "failed", "attempts": 3,
        "maxRetries": 2, "enqueuedAt": 1_000, "startedAt": 2_000, "finishedAt": 2_500, "durationMs": 500,
        "error": "E", "traceback": "T", "nextRetryAt": 3_000, "runAt": 900, "executions": 3, "deliveries": 0,
        "redeliveries": 1, "updatedAt": 2_500, "deadLetterId": "dl-1", "data": '{"n":1}',
    }  # fmt: skip
    client.hset(JOB, mapping=failed)
    for state, score in (("failed", 2_500_000), ("retrying", 2_000_000), ("all", 1_000_000)):
        for key in indexes(state, "emailJob"):
            client.zadd(key, {"j1": score})

    queue, commands = enqueuer_of("emailJob").requeue_commands("emailJob", {"n": 1}, "j1")
    assert queue == "default"
    run_multi(client, commands)

    found = dump(client)
    kind, stored, expires = found.pop("dramatiq:default.msgs")
    assert (kind, list(stored), expires) == ("hash", ["r-1"], False)
    body = json.loads(stored["r-1"])
    assert isinstance(body.pop("message_timestamp"), int)
    assert body == {
        "queue_name": "default", "actor_name": "emailJob", "args": ["j1", {"n": 1}], "kwargs": {},
        "options": {"requeue": True, "redis_message_id": "r-1", "runnable_at": AT, "enqueued_at": AT},
        "message_id": "j1",
    }  # fmt: skip
    fields = {
        # QUEUED_FIELDS rewritten (no runAt: not delayed), the requeue counted, the times of the
        # last attempt gone; its error, executions and redeliveries stay.
        "jobId": "j1", "jobName": "emailJob", "queue": "default", "state": "queued", "maxRetries": 5,
        "enqueuedAt": AT, "data": '{"n":1}', "attempts": 0, "deliveries": 0, "updatedAt": AT,
        "error": "E", "traceback": "T", "executions": 3, "redeliveries": 1, "deadLetterId": "dl-1", "requeues": 1,
    }  # fmt: skip
    assert set(QUEUED_FIELDS) - {"runAt", "priority"} <= set(fields)
    assert found == {
        JOB: record(**fields),
        # Out of the failed and retrying indexes, into the queued ones; "all" keeps its first enqueue.
        **indexes("queued", "emailJob", ("j1", SCORE)),
        **indexes("all", "emailJob", ("j1", 1_000_000)),
        "dramatiq:default": ("list", ["r-1"], False),
        "taskqueue:wakeup:default": ("list", ["1"], True),
    }
    assert_retention(client, JOB)
    assert 0 < client.ttl("taskqueue:wakeup:default") <= WAKEUP_TTL_SECONDS


def test_a_message_moved_to_its_queue_leaves_the_record_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A delayed message now due, or a retry: enqueued once already, it is only put on its queue."""
    monkeypatch.setattr("app.broker.enqueue.new_redis_id", lambda: "r-2")
    client = fakeredis.FakeRedis()
    client.hset(JOB, mapping={"state": "queued", "runAt": 5})
    moved = new_message("j1", "emailJob").copy(options={"enqueued_at": 1, "runnable_at": 5, "eta": 5})
    _, commands = enqueuer_of("emailJob").commands(moved, None, at_ms=AT)
    run_multi(client, commands)
    found = dump(client)
    kind, stored, expires = found.pop("dramatiq:default.msgs")
    assert (kind, expires) == ("hash", False)
    assert json.loads(stored["r-2"])["options"] == {
        "enqueued_at": 1, "runnable_at": 5, "eta": 5, "redis_message_id": "r-2"
    }  # fmt: skip
    assert found == {
        JOB: ("hash", {"state": "queued", "runAt": "5"}, False),
        "dramatiq:default": ("list", ["r-2"], False),
        "taskqueue:wakeup:default": ("list", ["1"], True),
    }


# ----- deliveries -----
def test_deliveries_reads_each_records_count() -> None:
    client = fakeredis.FakeRedis()
    client.hset(KEYS.job("a"), mapping={"deliveries": 2})
    client.hset(KEYS.job("b"), mapping={"state": "queued"})
    assert client.execute_command(*LOG.deliveries(["a", "b", "missing"])) == [2, 0, 0]


# ----- the attempt history (retrying), on fakeredis and on a real redis-server (its cjson) -----
WORKER = "host-1:4242"


@pytest.fixture(params=["fakeredis", "redis-server"])
def any_redis(request: pytest.FixtureRequest) -> redis.Redis:
    if request.param == "fakeredis":
        return fakeredis.FakeRedis()
    client: redis.Redis = request.getfixturevalue("redis_client")
    return client


def start(client: redis.Redis, attempt: int, at: int) -> None:
    client.execute_command(*LOG.running(queue="default", attempt=attempt, at_ms=at, worker=WORKER, **IDS))


def retried(attempt: int, at: int, *, error: str = "", traceback: str = "", worker: str = WORKER) -> Any:
    """Attempt `attempt`, started at `at`, failed 7 ms later: its retrying write."""
    return LOG.retrying(
        attempt=attempt, error=error or f"RuntimeError: attempt {attempt}", traceback=traceback or f"T{attempt}",
        next_retry_at_ms=at + 1_000, duration_ms=7, at_ms=at + 7, started_at_ms=at, worker=worker, **IDS,
    )  # fmt: skip


def history_of(client: redis.Redis) -> Any:
    return decode_record(record_fields(client, KEYS, "j1"))["history"]


def entry(attempt: int, at: int) -> dict[str, Any]:
    return {
        "attempt": attempt, "startedAt": at, "finishedAt": at + 7, "durationMs": 7,
        "error": f"RuntimeError: attempt {attempt}", "traceback": f"T{attempt}", "worker": WORKER,
    }  # fmt: skip


def test_each_retried_attempt_is_appended_to_the_history_in_its_retrying_write(any_redis: redis.Redis) -> None:
    start(any_redis, 1, AT)
    assert any_redis.hget(JOB, "worker") == WORKER.encode()  # the running attempt's worker
    assert any_redis.hget(JOB, "history") is None  # the current attempt is in the record's own fields
    assert any_redis.execute_command(*retried(1, AT)) == 1
    assert history_of(any_redis) == [entry(1, AT)]
    start(any_redis, 2, AT + 2_000)
    any_redis.execute_command(*retried(2, AT + 2_000))
    assert history_of(any_redis) == [entry(1, AT), entry(2, AT + 2_000)]
    assert set(entry(1, AT)) == set(HISTORY_ENTRY_FIELDS)
    # The last attempt stays in the record's fields as before.
    record = decode_record(any_redis.hgetall(JOB))
    assert (record["state"], record["attempts"], record["startedAt"], record["error"], record["worker"]) == (
        "retrying", 2, AT + 2_000, "RuntimeError: attempt 2", WORKER,
    )  # fmt: skip


def test_the_history_keeps_the_last_attempts_only(any_redis: redis.Redis) -> None:
    attempts = MAX_HISTORY + 3
    for attempt in range(1, attempts + 1):
        at = AT + attempt * 10_000
        start(any_redis, attempt, at)
        any_redis.execute_command(*retried(attempt, at))
    history = history_of(any_redis)
    assert [e["attempt"] for e in history] == list(range(attempts - MAX_HISTORY + 1, attempts + 1))
    assert history[-1] == entry(attempts, AT + attempts * 10_000)  # times in ms survive cjson


def test_a_late_or_repeated_retrying_adds_nothing_to_the_history(any_redis: redis.Redis) -> None:
    start(any_redis, 1, AT)
    start(any_redis, 2, AT + 2_000)  # attempt 1's retrying lands after attempt 2 started
    assert any_redis.execute_command(*retried(1, AT)) == 0
    assert any_redis.hget(JOB, "history") is None
    any_redis.execute_command(*retried(2, AT + 2_000))
    # Sent again (its reply was lost): appended once.
    assert any_redis.execute_command(*retried(2, AT + 2_000)) == 1
    assert history_of(any_redis) == [entry(2, AT + 2_000)]
    start(any_redis, 3, AT + 4_000)
    any_redis.execute_command(*LOG.succeeded(duration_ms=5, at_ms=AT + 4_005, attempt=3, started=True, **IDS))
    assert any_redis.execute_command(*retried(3, AT + 4_000)) == 0  # the job has finished
    # Its packed record keeps the history it had, and no hash is made again.
    assert history_of(any_redis) == [entry(2, AT + 2_000)] and not any_redis.exists(JOB)


def test_a_first_attempt_success_writes_no_history(any_redis: redis.Redis) -> None:
    start(any_redis, 1, AT)
    any_redis.execute_command(*LOG.succeeded(duration_ms=5, at_ms=AT + 5, attempt=1, started=True, **IDS))
    fields = record_fields(any_redis, KEYS, "j1")
    assert fields["state"] == "succeeded" and "history" not in fields
    assert fields["worker"] == WORKER and not any_redis.exists(JOB)  # packed


def test_a_history_entry_keeps_the_start_of_the_error_and_the_end_of_the_traceback(any_redis: redis.Redis) -> None:
    error = 'ValueError: é→ "quoted" / ' + "e" * HISTORY_ERROR_CHARS
    traceback = "Traceback (most recent call last):\n" + "  line\n" * 400 + "ValueError: ünïcode\n"
    start(any_redis, 1, AT)
    any_redis.execute_command(*retried(1, AT, error=error, traceback=traceback))
    (found,) = history_of(any_redis)
    assert found["error"] == error[:HISTORY_ERROR_CHARS]
    assert found["traceback"] == traceback[-HISTORY_TRACEBACK_CHARS:] and found["traceback"].endswith("ünïcode\n")
    # The record's own fields keep their longer cut.
    assert any_redis.hget(JOB, "traceback") == traceback[-4_000:].encode()


def test_a_requeue_keeps_the_history_and_forgets_the_attempts_worker(any_redis: redis.Redis) -> None:
    start(any_redis, 1, AT)
    any_redis.execute_command(*retried(1, AT))
    run_multi(any_redis, LOG.requeued(
        job_id="j1", job_name="webhookJob", queue="default", max_retries=5, data_json="{}", at_ms=AT + 9_000,
    ))  # fmt: skip
    record = decode_record(any_redis.hgetall(JOB))
    assert record["state"] == "queued" and record["history"] == [entry(1, AT)] and record["worker"] is None
    # Its attempts start again from 1, appended after the earlier ones.
    start(any_redis, 1, AT + 10_000)
    any_redis.execute_command(*retried(1, AT + 10_000))
    assert history_of(any_redis) == [entry(1, AT), entry(1, AT + 10_000)]
