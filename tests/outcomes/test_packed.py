"""Succeeded records packed into buckets (app/outcomes/packed.py, succeeded.lua, pack_record.lua,
drop_bucket.lua, prune_buckets.lua, delete_packed.lua), JobStore reading them, and the job ids
that carry their time (app/job_ids.py), on a private real redis-server (its cjson packs)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from app.broker.enqueue import Enqueuer
from app.errors import JobNotFound, JobStateConflict
from app.job_ids import job_id_time_ms, new_job_id, new_redis_id
from app.keys import Keys
from app.outcomes import packed
from app.outcomes.log import MAX_BUCKETS_DROPPED, OutcomeLog
from app.outcomes.record import SUCCEEDED, decode_record
from app.outcomes.store import JobStore
from app.settings import Settings
from tests.support.any_jobs import any_registry
from tests.support.redis_state import record_fields
from tests.support.services import RedisServer, wait_until

KEYS = Keys()
RETENTION_S = 3600
LOG = OutcomeLog(keys=KEYS, retention_seconds=RETENTION_S)
AT = 1_700_000_000_000
#: Text that JSON must escape or carry through: quotes, a backslash, a slash, unicode, controls.
ODD_TEXT = 'say "hi" \\ back/slash é→中文 \n\t\x01 end'


def succeed(client: redis.Redis, job_id: str, *, log: OutcomeLog = LOG, **kwargs: Any) -> Any:
    """A succeeded write of a job whose start was written (so nothing of its record is cleared)."""
    args: dict[str, Any] = {"job_name": "aJob", "duration_ms": 7, "at_ms": AT + 60_000, "started": True, **kwargs}
    return client.execute_command(*log.succeeded(job_id=job_id, **args))


def pack(client: redis.Redis, fields: dict[str, str], **kwargs: Any) -> bytes:
    """The packed record of a hash with these fields, once the job succeeded."""
    job_id = fields["jobId"]
    client.hset(KEYS.job(job_id), mapping=fields)
    assert succeed(client, job_id, **kwargs) == 1
    value = client.hget(packed.bucket_key(KEYS, job_id), job_id)
    assert value is not None and not client.exists(KEYS.job(job_id))
    return value


def total(client: redis.Redis) -> int:
    return int(client.hget(KEYS.succeeded_sizes(), packed.TOTAL_FIELD) or 0)


def listed_buckets(client: redis.Redis) -> list[int]:
    return [int(bucket) for bucket in client.zrange(KEYS.succeeded_buckets(), 0, -1)]


def expire(client: redis.Redis, *job_ids: str) -> None:
    """The buckets of these jobs expire (as they would, retention after their last write)."""
    buckets = [packed.bucket_key(KEYS, job_id) for job_id in job_ids]
    for bucket in buckets:
        client.pexpire(bucket, 1)
    wait_until(lambda: not client.exists(*buckets), timeout=5, message="the buckets to expire")


# ----- packing and unpacking -----
def compact(value: Any) -> str:
    """JSON as record_fields writes a packed record's JSON values back (compact, not escaped)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_every_field_reads_back_as_its_hash_held_it(redis_client: redis.Redis) -> None:
    job_id = new_job_id(at_ms=AT)
    history = [{"attempt": 1, "startedAt": AT, "error": ODD_TEXT, "worker": "host-1:42"}]
    fields = {
        "jobId": job_id, "jobName": "aJob", "queue": "default", "state": "running", "attempts": "2",
        "maxRetries": "5", "enqueuedAt": str(AT), "startedAt": str(AT + 10), "executions": "2",
        "data": compact({"email": 'é "quoted"', "n": [1, 2.5, None, True]}),
        "worker": "host-1:42", "priority": "high", "runAt": str(AT - 5), "error": ODD_TEXT,
        "traceback": ODD_TEXT * 3, "nextRetryAt": str(AT + 9), "redeliveries": "1", "redeliveredAt": str(AT + 3),
        "requeues": "-3", "deadLetterId": "dl-1", "cancelRequestedAt": str(AT + 4), "canceledAt": str(AT + 5),
        "progress": "12.5", "progressMessage": ODD_TEXT, "progressAt": str(AT + 6),
        "history": compact(history),
    }  # fmt: skip
    value = pack(redis_client, fields, result_json='{"rows":3,"name":"réport"}')
    layout, *values = json.loads(value)
    assert layout == packed.LAYOUT and len(values) <= len(packed.PACKED_FIELDS)
    # What the success wrote over, and its result.
    after = {
        **fields, "state": SUCCEEDED, "durationMs": "7", "finishedAt": str(AT + 60_000),
        "updatedAt": str(AT + 60_000), "deliveries": "0", "result": '{"rows":3,"name":"réport"}',
    }  # fmt: skip
    assert set(after) == set(packed.PACKED_FIELDS) | {"jobId"}  # every field, each kind
    # As text, field for field (JSON values compact, as record_fields writes them); decoded, the
    # record the hash would have shown.
    assert record_fields(redis_client, KEYS, job_id) == after
    assert packed.unpack(value, job_id) == decode_record(after)
    # Integers and JSON values go in as they are (no quotes), other fields as strings.
    unpacked = packed.unpack_fields(value, job_id)
    assert unpacked["attempts"] == 2 and unpacked["requeues"] == -3 and unpacked["progress"] == "12.5"
    assert unpacked["data"] == {"email": 'é "quoted"', "n": [1, 2.5, None, True]} and unpacked["history"] == history
    assert unpacked["error"] == ODD_TEXT and unpacked["result"] == {"rows": 3, "name": "réport"}
    assert b'"attempts"' not in value and b'{"rows":3,"name":"r\xc3\xa9port"}' in value


@pytest.mark.parametrize(
    ("name", "stored", "unpacked", "decoded"),
    [
        # A result that is a JSON string stays a string, not its JSON text.
        ("result", '"stopped early"', "stopped early", "stopped early"),
        ("result", '[1,"a",null,true,1e-05]', [1, "a", None, True, 1e-05], [1, "a", None, True, 1e-05]),
        ("data", '{"text":"a\nb"}', {"text": "a\nb"}, {"text": "a\nb"}),  # a raw control character
        # An integer field that is not written as JSON writes an integer: a string, read as its number.
        ("requeues", "007", "007", 7),
        ("requeues", "-12", -12, -12),
        ("error", ODD_TEXT, ODD_TEXT, ODD_TEXT),
    ],
)
def test_a_value_goes_in_as_json_only_if_it_is_json(
    redis_client: redis.Redis, name: str, stored: str, unpacked: Any, decoded: Any
) -> None:
    job_id = new_job_id(at_ms=AT)
    value = pack(redis_client, {"jobId": job_id, "jobName": "aJob", name: stored})
    assert packed.unpack_fields(value, job_id)[name] == unpacked
    assert packed.unpack(value, job_id)[name] == decoded


@pytest.mark.parametrize(
    ("name", "stored"),
    [("data", '{"a": 1,}'), ("result", "not json"), ("data", "0x10"), ("data", '{"n":nan}'), ("result", "[1.]")],
)
def test_a_json_field_that_is_not_json_leaves_a_record_that_still_lists(
    redis_client: redis.Redis, name: str, stored: str
) -> None:
    # Our own code writes data, result and history as JSON only, so the pack does not check them
    # (it runs for every success); a value that something else wrote is not JSON, and the record
    # reads as succeeded with the reason, instead of breaking every listing that reads it.
    job_id = new_job_id(at_ms=AT)
    value = pack(redis_client, {"jobId": job_id, "jobName": "aJob", name: stored})
    with pytest.raises(ValueError):
        packed.unpack_fields(value, job_id)
    record = packed.unpack(value, job_id)
    assert record["jobId"] == job_id and record["state"] == SUCCEEDED
    assert record["error"].startswith("its packed record cannot be read")


def test_times_are_packed_after_the_time_the_id_carries(redis_client: redis.Redis) -> None:
    job_id = new_job_id(at_ms=AT)
    value = pack(
        redis_client, {"jobId": job_id, "jobName": "aJob", "enqueuedAt": str(AT + 1), "startedAt": str(AT + 9_443)}
    )
    raw = json.loads(value)
    assert raw[1 + packed.PACKED_FIELDS.index("enqueuedAt")] == 1
    assert raw[1 + packed.PACKED_FIELDS.index("startedAt")] == 9_443
    assert packed.unpack(value, job_id)["startedAt"] == AT + 9_443
    # An id that carries no time: the times as they are.
    value = pack(redis_client, {"jobId": "job-1", "jobName": "aJob", "startedAt": str(AT)})
    assert packed.unpack(value, "job-1")["startedAt"] == AT


def test_a_record_of_another_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="layout 2"):
        packed.unpack_fields('[2,"aJob"]', "j1")


# ----- the succeeded write -----
ENQUEUER = Enqueuer(registry=any_registry(), keys=KEYS, log=LOG, settings=Settings(max_retries=2))


def enqueue(client: redis.Redis, job_id: str, job_name: str = "aJob") -> None:
    """A new job as the API accepts it: record, index entries (queued, all) and message, at the
    time its id was made."""
    message, _ = ENQUEUER.message(job_name, {"n": job_id}, job_id=job_id)
    at_ms = job_id_time_ms(job_id) or AT
    _, commands = ENQUEUER.commands(message, None, at_ms=at_ms)
    with client.pipeline(transaction=True) as pipeline:
        for command in commands:
            pipeline.execute_command(*command)
        pipeline.execute()


def run_to_success(client: redis.Redis, job_id: str, job_name: str = "aJob") -> None:
    at_ms = (job_id_time_ms(job_id) or AT) + 100
    client.execute_command(*LOG.running(job_id=job_id, job_name=job_name, queue="default", attempt=1, at_ms=at_ms))
    ids = {"job_id": job_id, "job_name": job_name}
    assert client.execute_command(*LOG.succeeded(duration_ms=5, at_ms=at_ms + 5, queue="default", **ids)) == 1


def indexes_holding(client: redis.Redis, job_id: str) -> list[str]:
    return [key.decode() for key in client.keys("taskqueue:idx:*") if client.zscore(key, job_id) is not None]


def test_a_success_packs_the_record_and_takes_it_out_of_every_index(redis_client: redis.Redis) -> None:
    job_id = new_job_id(at_ms=AT + 1_234)
    enqueue(redis_client, job_id)
    assert sorted(indexes_holding(redis_client, job_id)) == [
        "taskqueue:idx:all", "taskqueue:idx:all:aJob", "taskqueue:idx:queued", "taskqueue:idx:queued:aJob",
    ]  # fmt: skip
    run_to_success(redis_client, job_id)
    assert not redis_client.exists(KEYS.job(job_id)) and indexes_holding(redis_client, job_id) == []
    bucket = KEYS.succeeded_bucket((AT + 1_234) // 1_000)
    assert packed.bucket_key(KEYS, job_id) == bucket and redis_client.hkeys(bucket) == [job_id.encode()]
    assert 0 < redis_client.ttl(bucket) <= RETENTION_S
    assert listed_buckets(redis_client) == [(AT + 1_234) // 1_000] and total(redis_client) == 1
    fields = record_fields(redis_client, KEYS, job_id)
    assert (fields["state"], fields["jobName"], fields["queue"], fields["data"]) == (
        SUCCEEDED, "aJob", "default", json.dumps({"n": job_id}, separators=(",", ":")),
    )  # fmt: skip
    assert (fields["attempts"], fields["executions"], fields["durationMs"]) == ("1", "1", "5")


def test_the_bucket_is_the_second_the_id_was_made_in() -> None:
    assert packed.bucket_of(new_job_id(at_ms=AT + 999)) == AT // 1_000
    assert packed.bucket_of(new_job_id(at_ms=AT + 1_000)) == AT // 1_000 + 1
    assert packed.BUCKET_MS == 1_000
    # An id that carries no time: bucket 0, placed at the bottom of listings.
    for job_id in ("job-1", uuid.uuid4().hex, str(uuid.uuid4())):
        assert packed.bucket_of(job_id) == 0 and packed.entry_score(job_id) == 0
    assert packed.bucket_key(KEYS, "job-1") == "taskqueue:succeeded:0"
    assert packed.entry_score(new_job_id(at_ms=AT + 5)) == (AT + 5) * 1000  # as index_score


# ----- expiry and the cap -----
def test_a_new_bucket_takes_an_expired_oldest_one_off_the_list(redis_client: redis.Redis) -> None:
    first, second, third = (new_job_id(at_ms=AT + n * 1_000) for n in range(3))
    for job_id in (first, second):
        redis_client.hset(KEYS.job(job_id), "jobName", "aJob")
        succeed(redis_client, job_id)
    assert total(redis_client) == 2
    expire(redis_client, first)
    # Still listed and counted until a new bucket starts...
    assert len(listed_buckets(redis_client)) == 2 and total(redis_client) == 2
    succeed(redis_client, third)
    # ...which takes it off the list and out of the count.
    assert listed_buckets(redis_client) == [packed.bucket_of(second), packed.bucket_of(third)]
    assert total(redis_client) == 2
    assert redis_client.hget(KEYS.succeeded_sizes(), str(packed.bucket_of(first))) is None


def test_prune_takes_off_every_expired_bucket_older_than_the_retention(redis_client: redis.Redis) -> None:
    ids = [new_job_id(at_ms=AT + n * 1_000) for n in range(5)]
    for job_id in ids:
        succeed(redis_client, job_id)
    succeed(redis_client, new_job_id(at_ms=AT + 10))  # two records in the first bucket
    expire(redis_client, ids[0], ids[1], ids[3], ids[4])
    # Buckets up to the fourth's second may have expired; the third is still there (a late record
    # keeps a bucket), and the ones beyond it are looked at too; the fifth is too new to look at.
    prune = packed.prune_command(KEYS, older_than_ms=AT + 3_000)
    assert redis_client.execute_command(*prune) == [4, 3, 4]
    assert listed_buckets(redis_client) == [packed.bucket_of(ids[2]), packed.bucket_of(ids[4])]
    assert total(redis_client) == 2
    # From an offset past the third (as cleanup goes on when a call looked at its most).
    expire(redis_client, ids[2])
    assert redis_client.execute_command(*packed.prune_command(KEYS, older_than_ms=AT + 9_000, offset=1)) == [1, 1, 1]
    assert listed_buckets(redis_client) == [packed.bucket_of(ids[2])]
    assert redis_client.execute_command(*packed.prune_command(KEYS, older_than_ms=AT + 9_000)) == [1, 1, 1]
    assert listed_buckets(redis_client) == [] and total(redis_client) == 0
    assert redis_client.hgetall(KEYS.succeeded_sizes()) == {b"total": b"0"}
    assert redis_client.execute_command(*prune) == [0, 0, 0]


def capped(cap: int) -> OutcomeLog:
    return OutcomeLog(keys=KEYS, retention_seconds=RETENTION_S, caps={SUCCEEDED: cap})


def test_the_cap_drops_the_oldest_buckets_whole_never_the_one_just_written(redis_client: redis.Redis) -> None:
    log = capped(2)
    in_first = [new_job_id(at_ms=AT + n) for n in range(3)]
    for job_id in in_first:
        succeed(redis_client, job_id, log=log)
    # Over the cap, but the bucket just written stays.
    assert total(redis_client) == 3 and listed_buckets(redis_client) == [AT // 1_000]
    later = new_job_id(at_ms=AT + 1_000)
    succeed(redis_client, later, log=log)
    assert listed_buckets(redis_client) == [AT // 1_000 + 1] and total(redis_client) == 1
    assert not redis_client.exists(KEYS.succeeded_bucket(AT // 1_000))
    assert record_fields(redis_client, KEYS, in_first[0]) == {} and record_fields(redis_client, KEYS, later)


def test_one_write_drops_a_few_buckets_at_most(redis_client: redis.Redis) -> None:
    buckets = 2 * MAX_BUCKETS_DROPPED
    for n in range(buckets):
        succeed(redis_client, new_job_id(at_ms=AT + n * 1_000))  # no cap yet
    newest = new_job_id(at_ms=AT + buckets * 1_000)
    succeed(redis_client, newest, log=capped(1))
    assert total(redis_client) == buckets + 1 - MAX_BUCKETS_DROPPED
    assert listed_buckets(redis_client)[0] == AT // 1_000 + MAX_BUCKETS_DROPPED
    succeed(redis_client, new_job_id(at_ms=AT + buckets * 1_000 + 1), log=capped(1))
    assert listed_buckets(redis_client) == [packed.bucket_of(newest)] and total(redis_client) == 2


@pytest.mark.parametrize("started_before", [0, 1, 2])
def test_a_success_counts_the_execution_its_start_has_not_counted(
    redis_client: redis.Redis, started_before: int
) -> None:
    # The worker sends a start without waiting: the success may land first (its start still being
    # sent again after Redis blinked), and a start that lands after it changes nothing. With the
    # delivery known, the record tells: this run is counted once, by whichever write counts it.
    job_id = new_job_id(at_ms=AT)
    enqueue(redis_client, job_id)
    # `started_before` starts of attempt 1 landed: earlier deliveries (workers killed mid-job), and
    # for 2 also this one, the second delivery.
    for _ in range(started_before):
        redis_client.execute_command(
            *LOG.running(job_id=job_id, job_name="aJob", queue="default", attempt=1, at_ms=AT + 10)
        )
    assert succeed(redis_client, job_id, attempt=1, delivery=2, queue="default") == 1
    late_start = LOG.running(job_id=job_id, job_name="aJob", queue="default", attempt=1, at_ms=AT + 20)
    assert redis_client.execute_command(*late_start) == 0  # changes nothing: the record is packed
    fields = packed.unpack_fields(redis_client.hget(packed.bucket_key(KEYS, job_id), job_id), job_id)
    # 0: only this run, counted by the success; 1: the killed first delivery and this run; 2: both
    # counted by their starts, so not by the success.
    assert fields["executions"] == {0: 1, 1: 2, 2: 2}[started_before]


def test_a_repeated_success_changes_nothing(redis_client: redis.Redis) -> None:
    job_id = new_job_id(at_ms=AT)
    succeed(redis_client, job_id, result_json='"first"')
    before = redis_client.hget(packed.bucket_key(KEYS, job_id), job_id)
    assert succeed(redis_client, job_id, result_json='"second"', duration_ms=99) == 0
    assert redis_client.hget(packed.bucket_key(KEYS, job_id), job_id) == before and total(redis_client) == 1
    assert not redis_client.exists(KEYS.job(job_id))


# ----- JobStore on packed records -----
@pytest.fixture
def store(redis_server: RedisServer, loop: asyncio.AbstractEventLoop) -> Iterator[JobStore]:
    client = redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=5)
    yield JobStore(client=client, keys=KEYS, log=LOG, enqueuer=ENQUEUER)
    loop.run_until_complete(client.aclose())


def walk(loop: asyncio.AbstractEventLoop, store: JobStore, *, limit: int, **filters: Any) -> list[str]:
    """Every page of a listing, following nextCursor to the end: the job ids in order."""
    listed: list[str] = []
    cursor = None
    for _ in range(1_000):
        records, next_cursor = loop.run_until_complete(
            store.list(state=filters.get("state"), job_name=filters.get("job_name"), limit=limit, cursor=cursor)
        )
        listed += [record["jobId"] for record in records]
        if next_cursor is None:
            return listed
        assert len(records) == limit, "only the last page may be short"
        score, _, member = next_cursor.partition("-")
        cursor = (int(score), member)
    raise AssertionError("pagination does not end")


@pytest.fixture
def mixed(redis_client: redis.Redis) -> list[tuple[str, str, str]]:
    """40 jobs, two made in each of 20 milliseconds 300 ms apart (so a few per bucket): of two
    job types, two in three succeeded (packed), the others queued (in the indexes). Their
    (job id, job type, state), newest first."""
    jobs = []
    for n in range(40):
        job_id = new_job_id(at_ms=AT + (n // 2) * 300)
        job_name = ("aJob", "bJob")[n % 2]
        enqueue(redis_client, job_id, job_name)
        if n % 3:
            run_to_success(redis_client, job_id, job_name)
        jobs.append((job_id, job_name, SUCCEEDED if n % 3 else "queued"))
    assert len(listed_buckets(redis_client)) > packed.BUCKETS_AT_ONCE
    return sorted(jobs, key=lambda job: (job_id_time_ms(job[0]), job[0]), reverse=True)


@pytest.mark.parametrize("limit", [1, 3, 7, 50])
def test_a_listing_merges_index_entries_with_packed_records_newest_first(
    loop: asyncio.AbstractEventLoop, store: JobStore, mixed: list[tuple[str, str, str]], limit: int
) -> None:
    def expected(keep: Any) -> list[str]:
        return [job_id for job_id, job_name, state in mixed if keep(job_name, state)]

    # Each page follows on from the last: no repeat, no gap, across both kinds.
    assert walk(loop, store, limit=limit) == expected(lambda name, state: True)
    assert walk(loop, store, limit=limit, job_name="bJob") == expected(lambda name, state: name == "bJob")
    assert walk(loop, store, limit=limit, state=SUCCEEDED) == expected(lambda name, state: state == SUCCEEDED)
    assert walk(loop, store, limit=limit, state=SUCCEEDED, job_name="aJob") == expected(
        lambda name, state: state == SUCCEEDED and name == "aJob"
    )
    assert walk(loop, store, limit=limit, state="queued") == expected(lambda name, state: state == "queued")


def test_a_page_reads_no_record_below_where_the_page_ends_anyway(
    loop: asyncio.AbstractEventLoop, store: JobStore, mixed: list[tuple[str, str, str]]
) -> None:
    succeeded = [job_id for job_id, _, state in mixed if state == SUCCEEDED]
    above = (packed.entry_score(succeeded[4]), succeeded[4])
    found = loop.run_until_complete(packed.page(store.client, KEYS, below=None, limit=50, above=above))
    # Down to `above` (in a listing, the place of another listing's entry) and not one further.
    assert [entry.job_id for entry in found.entries] == succeeded[:5]
    assert (found.more, found.last, found.examined) == (True, above, 5)
    # Nothing below: the page ends as if `above` were not given.
    oldest = (packed.entry_score(succeeded[-1]) - 1, "")
    found = loop.run_until_complete(packed.page(store.client, KEYS, below=None, limit=50, above=oldest))
    assert ([entry.job_id for entry in found.entries], found.more) == (succeeded, False)


def test_get_and_delete_read_and_remove_a_packed_record(
    loop: asyncio.AbstractEventLoop, store: JobStore, redis_client: redis.Redis
) -> None:
    job_id, other = new_job_id(at_ms=AT), new_job_id(at_ms=AT + 1)
    for each in (job_id, other):
        enqueue(redis_client, each)
        run_to_success(redis_client, each)
    record = loop.run_until_complete(store.get(job_id))
    assert (record["jobId"], record["state"], record["data"], record["attempts"]) == (
        job_id, SUCCEEDED, {"n": job_id}, 1,
    )  # fmt: skip
    assert loop.run_until_complete(store.get(job_id, ["state", "data"]))["state"] == SUCCEEDED
    # Only a failed or canceled job is retried.
    with pytest.raises(JobStateConflict, match="succeeded"):
        loop.run_until_complete(store.requeue(job_id))
    loop.run_until_complete(store.delete(job_id))
    with pytest.raises(JobNotFound):
        loop.run_until_complete(store.get(job_id))
    with pytest.raises(JobNotFound):
        loop.run_until_complete(store.delete(job_id))
    # Out of its bucket and its count; the other record of the bucket stays.
    bucket = str(packed.bucket_of(job_id)).encode()
    assert redis_client.hkeys(packed.bucket_key(KEYS, job_id)) == [other.encode()]
    assert redis_client.hgetall(KEYS.succeeded_sizes()) == {bucket: b"1", b"total": b"1"}
    assert walk(loop, store, limit=5) == [other]
    with pytest.raises(JobNotFound):
        loop.run_until_complete(store.get(new_job_id(at_ms=AT + 2)))


# ----- job ids -----
def test_a_job_id_is_a_version_7_uuid_that_carries_its_time() -> None:
    for at_ms in (0, 1, AT, 2**48 - 1):
        job_id = new_job_id(at_ms=at_ms)
        parsed = uuid.UUID(hex=job_id)
        assert len(job_id) == 32 and parsed.hex == job_id
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert job_id_time_ms(job_id) == at_ms
    before = time.time_ns() // 1_000_000
    made = job_id_time_ms(new_job_id())
    assert made is not None and before <= made <= time.time_ns() // 1_000_000
    # The rest is random.
    assert len({new_job_id(at_ms=AT) for _ in range(1_000)}) == 1_000


def test_job_ids_sort_by_their_time() -> None:
    times = [AT + n for n in (5, 0, 3_600_000, 1, 999, 1_000, 2**40)]
    ids = {at_ms: new_job_id(at_ms=at_ms) for at_ms in times}
    assert sorted(ids.values()) == [ids[at_ms] for at_ms in sorted(times)]


def test_an_id_without_its_time_says_so() -> None:
    v4 = uuid.uuid4().hex
    for job_id in (v4, "job-1", "", "z" * 12 + "7" + "0" * 19, str(uuid.UUID(new_job_id()))):
        assert job_id_time_ms(job_id) is None, job_id
    # Dramatiq's message ids: random version-4 UUIDs with dashes.
    text = new_redis_id()
    redis_id = uuid.UUID(text)
    assert str(redis_id) == text and redis_id.version == 4 and redis_id.variant == uuid.RFC_4122
