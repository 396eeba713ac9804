"""The console's bounded reads (app/ui/reads.py and its Lua scripts) against a plain Python reading
of the same records: the pages of a filter, walked with their cursors, list exactly the matching
jobs, newest first, across ties of score, expired records and letters other than ASCII; the top
errors and the confirmation's count are those of the records."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from app.http import create_app
from app.job_ids import new_job_id
from app.keys import Keys
from app.outcomes import packed
from app.outcomes.log import OutcomeLog
from app.outcomes.record import FAILED, RUNNING, SUCCEEDED, index_score, now_ms
from app.settings import Settings
from app.ui import reads
from tests.support.services import RedisServer

T = TypeVar("T")

KEYS = Keys()
ERRORS = ["  \n\tBoom: É bad\nmore", "boom: é BAD", "\u00a0\nZed\nx", "ÉCHEC total", "x" * 300, "   ",
          "HTTPError: 503 from https://example.com"]  # fmt: skip


def _seed(client: Any, keys: Any) -> dict[str, dict[str, str]]:
    """Failed and succeeded jobs of two queues, a third of them sharing one score (ids that sort
    differently by bytes and by a locale's collation), and index entries whose record expired."""
    rng = random.Random(7)
    now, records = now_ms(), {}
    pipe = client.pipeline(transaction=False)
    for n in range(900):
        job_id = rng.choice("abAB-_.:") + f"j{n}" + rng.choice("-_.:x")
        state = FAILED if n % 3 else SUCCEEDED
        record = {"jobId": job_id, "jobName": "emailJob", "queue": rng.choice(["default", "other"]), "state": state}
        if state == FAILED:
            record["error"] = rng.choice(ERRORS)
        records[job_id] = record
        pipe.hset(keys.job(job_id), mapping=record)
        score = index_score(now - 10) if n % 3 == 0 else index_score(now - 1_000 - n, n)
        for index in (keys.state_index(state), keys.all_index()):
            pipe.zadd(index, {job_id: score})
    for n in range(150):
        for index in (keys.state_index(FAILED), keys.all_index()):
            pipe.zadd(index, {f"gone-{n}": index_score(now - 500 - n)})
    pipe.execute()
    return records


def _with_api(server: RedisServer, read: Callable[[Any], Awaitable[T]]) -> T:
    """`read(api)` in the API's lifespan (which closes its Redis client)."""
    app = create_app(Settings(api_key="k" * 32, redis_url=server.url))

    async def run() -> T:
        async with app.router.lifespan_context(app):
            return await read(app.state.api)

    return asyncio.run(run())


def _reference(client: Any, index: str, records: dict[str, dict[str, str]], f: reads.JobFilter) -> list[str]:
    entries = client.zrevrange(index, 0, -1, withscores=True)
    ordered = sorted(((int(s), m.decode()) for m, s in entries), key=lambda e: (e[0], e[1].encode()), reverse=True)
    found = []
    for _, job_id in ordered:
        record = records.get(job_id)
        if record is None or (f.queue and record["queue"] != f.queue):
            continue
        if f.error_text and f.error_text.lower() not in record.get("error", "\0").lower():
            continue
        found.append(job_id)
    return found


@pytest.mark.parametrize(
    "given",
    [{}, {"state": FAILED}, {"queue": "other"}, {"state": FAILED, "error_text": "503"},
     {"state": FAILED, "error_text": "BOOM"}, {"error_text": "é"}, {"queue": "default", "error_text": "no such"}],
)  # fmt: skip
def test_filtered_pages_walk_exactly_the_matching_jobs(
    redis_server: RedisServer, redis_client: Any, given: dict[str, Any]
) -> None:
    records = _seed(redis_client, KEYS)
    index = KEYS.state_index(given.get("state") or "all")
    wanted = _reference(redis_client, index, records, reads.JobFilter(**given))

    async def walk(api: Any) -> tuple[list[str], list[reads.JobPage]]:
        seen: list[str] = []
        pages: list[reads.JobPage] = []
        cursor = None
        while len(pages) < 200:
            page = await reads.list_jobs(api, reads.JobFilter(**given, cursor=cursor), limit=20)
            pages.append(page)
            seen += [job["jobId"] for job in page.jobs]
            if page.next_cursor is None:
                return seen, pages
            cursor = reads.parse_cursor(page.next_cursor)
        raise AssertionError("no last page")

    seen, pages = _with_api(redis_server, walk)
    assert seen == wanted
    assert all(page.scanned <= reads.SCAN_LIMIT and page.total == pages[0].total for page in pages)


def test_top_errors_and_the_confirmations_count(redis_server: RedisServer, redis_client: Any) -> None:
    records = _seed(redis_client, KEYS)
    newest = [m.decode() for m in redis_client.zrevrange(KEYS.state_index(FAILED), 0, reads.ERROR_SAMPLE - 1)]
    expected = Counter(
        reads._first_line(records[i]["error"]) or "(no error text)" for i in newest if i in records
    ).most_common(10)

    async def read(api: Any) -> tuple[reads.DeadLetters, list[tuple[int, bool]]]:
        groups = await reads.dead_letters(api, None)
        counts = [await reads.count_matching_failed(api, None, text, limit=limit)
                  for text in ("503", "bad", "é") for limit in (10_000, 100)]  # fmt: skip
        return groups, counts

    groups, counts = _with_api(redis_server, read)
    assert (groups.top_errors, groups.sampled) == (expected, reads.ERROR_SAMPLE)
    failed = [m.decode() for m in redis_client.zrevrange(KEYS.state_index(FAILED), 0, -1)]
    for (text, limit), got in zip([(t, n) for t in ("503", "bad", "é") for n in (10_000, 100)], counts, strict=True):
        looked = failed[:limit]
        matching = sum(1 for i in looked if i in records and text in records[i].get("error", "").lower())
        assert got == (matching, len(looked) == limit), (text, limit)


PACKED_ERRORS = ['HTTPError: 503 from https://example.com/"hook"', "ÉCHEC total", "back\\slash"]


@pytest.mark.parametrize(
    "given",
    [{}, {"state": SUCCEEDED}, {"queue": "other"}, {"error_text": "https://example.com/"}, {"error_text": "échec"},
     {"state": SUCCEEDED, "error_text": '"hook"'}, {"error_text": "k\\s"}, {"queue": "default", "error_text": "503"}],
)  # fmt: skip
def test_pages_merge_packed_succeeded_records_with_the_index(
    redis_server: RedisServer, redis_client: Any, given: dict[str, Any]
) -> None:
    # Succeeded jobs packed by the succeeded script (some with the error an earlier attempt left,
    # with quotes, slashes, a backslash, letters other than ASCII), among the indexed ones: the
    # pages list exactly the matching jobs of both, newest first.
    records = _seed(redis_client, KEYS)
    log = OutcomeLog(keys=KEYS, retention_seconds=3600)
    now = now_ms()
    placed: list[tuple[int, str]] = []
    for n in range(300):
        made = now - 20 - n * 7
        job_id = new_job_id(at_ms=made)
        record = {"jobId": job_id, "jobName": "emailJob", "queue": ("default", "other")[n % 2], "state": RUNNING}
        if n % 4 == 0:
            record["error"] = PACKED_ERRORS[n % 3]
        redis_client.hset(KEYS.job(job_id), mapping=record)
        assert redis_client.execute_command(
            *log.succeeded(job_id=job_id, job_name="emailJob", duration_ms=1, at_ms=now)
        )
        records[job_id] = {**record, "state": SUCCEEDED}
        placed.append((packed.entry_score(job_id), job_id))
    f = reads.JobFilter(**given)
    index = KEYS.state_index(given.get("state") or "all")
    entries = [(int(s), m.decode()) for m, s in redis_client.zrevrange(index, 0, -1, withscores=True)]
    wanted = [
        job_id
        for _, job_id in sorted([*entries, *placed], key=lambda e: (e[0], e[1].encode()), reverse=True)
        if job_id in records
        and (not f.queue or records[job_id]["queue"] == f.queue)
        and (not f.error_text or f.error_text.lower() in records[job_id].get("error", "\0").lower())
    ]

    async def walk(api: Any) -> list[str]:
        seen: list[str] = []
        cursor = None
        for _ in range(400):
            page = await reads.list_jobs(api, reads.JobFilter(**given, cursor=cursor), limit=20)
            seen += [job["jobId"] for job in page.jobs]
            if page.next_cursor is None:
                return seen
            cursor = reads.parse_cursor(page.next_cursor)
        raise AssertionError("no last page")

    assert _with_api(redis_server, walk) == wanted


def test_the_count_of_a_listing_holds_its_packed_records_in_the_time_range(
    redis_server: RedisServer, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 30 succeeded jobs packed in buckets 10 s apart (3 a bucket) and 5 failed ones in the index.
    log = OutcomeLog(keys=KEYS, retention_seconds=3600)
    now = now_ms()
    for n in range(30):
        job_id = new_job_id(at_ms=now - 1_000 - (n // 3) * 10_000)
        job_name = ("emailJob", "webhookJob")[n % 2]
        redis_client.hset(KEYS.job(job_id), mapping={"jobId": job_id, "jobName": job_name, "state": RUNNING})
        assert redis_client.execute_command(*log.succeeded(job_id=job_id, job_name=job_name, duration_ms=1, at_ms=now))
    for _ in range(5):
        job_id = new_job_id(at_ms=now - 500)
        for index in (KEYS.state_index(FAILED), KEYS.all_index()):
            redis_client.zadd(index, {job_id: index_score(now - 500)})

    def count(**given: Any) -> tuple[int, bool, bool]:
        async def read(api: Any) -> reads.JobPage:
            return await reads.list_jobs(api, reads.JobFilter(**given), limit=5)

        page = _with_api(redis_server, read)
        return page.total, page.total_at_least, page.succeeded_uncounted

    assert count() == (35, False, False)
    assert count(state=SUCCEEDED) == (30, False, False)
    # The last 25 s: the buckets of 2 s, 12 s and 22 s ago (to the second), and the failed ones.
    assert count(since_ms=now - 25_000) == (9 + 5, False, False)
    assert count(state=SUCCEEDED, since_ms=now - 25_000, until_ms=now - 5_000) == (6, False, False)
    # More buckets in the range than one count adds up: a lower bound, said so.
    monkeypatch.setattr(packed, "COUNT_AT_MOST", 4)
    assert count(state=SUCCEEDED, since_ms=now - 3_600_000) == (12, True, False)
    # Per job type: the packed ones are not counted (their counts are per second), and that is said.
    assert count(job_name="emailJob") == (0, False, True)
