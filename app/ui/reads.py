"""What the console's pages read from Redis, each page in a bounded number of round trips and
never a KEYS or SCAN of the keyspace: the indexes, the queues' figures, the live workers, and
the per-minute outcome counts."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.api.context import Api
from app.api.errors import deadline
from app.api.queue_state import QueueReader, QueueState
from app.connection.commands import run_commands
from app.connection.scripts import lua
from app.keys import delay_queue
from app.outcomes.record import FAILED, PUBLIC_FIELDS, RETRYING, decode_record, now_ms, public

#: A page of jobs.
PAGE = 50
#: Filters the indexes cannot apply (queue, error text) look at most this many entries per page.
SCAN_LIMIT = 1_000
#: Top errors are counted among this many of the newest failed jobs.
ERROR_SAMPLE = 200
LIST_FIELDS = PUBLIC_FIELDS
MINUTE_COUNTS_SCRIPT = lua("minute_counts")
MINUTE_MS = 60_000
OUTCOMES = ("succeeded", "retried", "failed")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Worker:
    """One live worker process."""

    broker_id: str
    host: str
    pid: int | None
    parent_pid: int | None
    threads: int | None
    in_flight: int
    last_beat_ms: int


@dataclass(frozen=True)
class Minutes:
    """Outcome counts per bar (`size` minutes each), oldest first, ending with the current minute."""

    size: int
    counts: dict[str, list[int]]

    def total(self, outcome: str) -> int:
        return sum(self.counts[outcome])

    @classmethod
    def parse(cls, size: int, reply: Sequence[Any]) -> Minutes:
        values = [int(v) for v in reply]
        return cls(size=size, counts={outcome: values[i::3] for i, outcome in enumerate(OUTCOMES)})


@dataclass(frozen=True)
class Overview:
    queues: list[QueueState]
    retrying: dict[str, int]
    workers: list[Worker]
    hour: Minutes
    day: Minutes
    at_ms: int


def queue_reader(api: Api) -> QueueReader:
    return QueueReader.of(api.registry, api.keys, heartbeat_timeout_ms=api.settings.heartbeat_timeout_ms)


async def overview(api: Api) -> Overview:
    """Everything the overview shows, in two round trips: the queues, the retrying counts, the
    live workers' ids and a day of minute counts; then the workers' descriptions and jobs in flight."""
    keys, now = api.keys, now_ms()
    reader = queue_reader(api)
    job_types = list(api.registry)
    this_minute = now // MINUTE_MS
    minutes = [this_minute - offset for offset in range(1439, -1, -1)]
    async with deadline(), api.client.pipeline(transaction=False) as pipeline:
        run_commands(pipeline, [reader.command(now)])
        for job_type in job_types:
            pipeline.zcard(keys.state_index(RETRYING, job_type.name))
        pipeline.zrangebyscore(keys.heartbeats(), now - api.settings.heartbeat_timeout_ms, "+inf", withscores=True)
        minute_keys = [keys.minute_counts(minute) for minute in minutes]
        pipeline.eval(MINUTE_COUNTS_SCRIPT, 60, *minute_keys[-60:], 1)
        pipeline.eval(MINUTE_COUNTS_SCRIPT, len(minute_keys), *minute_keys, 10)
        replies: list[Any] = await pipeline.execute()
    queues = reader.parse(replies[0], now)
    retrying: Counter[str] = Counter()
    for job_type, count in zip(job_types, replies[1 : 1 + len(job_types)], strict=True):
        retrying[job_type.queue] += int(count)
    beats = [(_text(member), int(score)) for member, score in replies[1 + len(job_types)]]
    hour = Minutes.parse(1, replies[2 + len(job_types)])
    day = Minutes.parse(10, replies[3 + len(job_types)])
    workers = await _workers(api, beats, reader.queues)
    return Overview(queues=queues, retrying=dict(retrying), workers=workers, hour=hour, day=day, at_ms=now)


async def _workers(api: Api, beats: list[tuple[str, int]], queues: Sequence[str]) -> list[Worker]:
    if not beats:
        return []
    keys = api.keys
    names = [name for queue in queues for name in (queue, delay_queue(queue))]
    async with deadline(), api.client.pipeline(transaction=False) as pipeline:
        pipeline.hmget(keys.workers(), *[broker_id for broker_id, _ in beats])
        for broker_id, _ in beats:
            for name in names:
                pipeline.scard(keys.acks(broker_id, name))
        replies: list[Any] = await pipeline.execute()
    descriptions, in_flight = replies[0], replies[1:]
    workers = []
    for n, ((broker_id, beat), raw) in enumerate(zip(beats, descriptions, strict=True)):
        try:
            described = json.loads(raw) if raw else {}
        except ValueError:
            described = {}
        workers.append(
            Worker(
                broker_id=broker_id,
                host=str(described.get("host") or "?"),
                pid=described.get("pid"),
                parent_pid=described.get("ppid"),
                threads=described.get("threads"),
                in_flight=sum(int(c) for c in in_flight[n * len(names) : (n + 1) * len(names)]),
                last_beat_ms=beat,
            )
        )
    return sorted(workers, key=lambda w: (w.host, w.parent_pid or 0, w.pid or 0))


@dataclass(frozen=True)
class JobFilter:
    """What the jobs page lists: the indexes take state, job type and time range; queue and error
    text are looked for among at most SCAN_LIMIT entries."""

    state: str | None = None
    job_name: str | None = None
    queue: str | None = None
    error_text: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    cursor: tuple[int, str] | None = None

    @property
    def scanned(self) -> bool:
        """Whether a filter applies to the entries read (so counts are approximate)."""
        return bool(self.queue or self.error_text)

    def matches(self, record: dict[str, Any]) -> bool:
        if self.queue and record.get("queue") != self.queue:
            return False
        return not (self.error_text and self.error_text.lower() not in (record.get("error") or "").lower())


@dataclass
class JobPage:
    jobs: list[dict[str, Any]]
    next_cursor: str | None
    #: How many entries the index holds in the time range (exact), and for a scanned filter how
    #: many of the entries read matched.
    total: int
    scanned: int = 0
    scan_capped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _bounds(f: JobFilter) -> tuple[int | str, int | str]:
    top: int | str = "+inf" if f.until_ms is None else f.until_ms * 1000 + 999
    low: int | str = "-inf" if f.since_ms is None else f.since_ms * 1000
    return top, low


async def list_jobs(api: Api, f: JobFilter, *, limit: int = PAGE) -> JobPage:
    """Newest first, from the cursor (`<score>-<jobId>` of the last entry shown)."""
    index = api.keys.state_index(f.state or "all", f.job_name)
    top, low = _bounds(f)
    async with deadline():
        total = int(await api.client.zcount(index, low, top))
        if f.cursor is not None:
            top = f.cursor[0]
        jobs: list[dict[str, Any]] = []
        offset, scanned, last = 0, 0, None
        chunk = limit + 1
        while True:
            rows: Any = await api.client.zrevrangebyscore(index, top, low, start=offset, num=chunk, withscores=True)
            offset += len(rows)
            entries = [(int(score), _text(member)) for member, score in rows]
            if f.cursor is not None:
                entries = [e for e in entries if e[0] < f.cursor[0] or e[1] < f.cursor[1]]
            async with api.client.pipeline(transaction=False) as pipeline:
                for _, job_id in entries:
                    pipeline.hmget(api.keys.job(job_id), *LIST_FIELDS)
                values: list[Any] = await pipeline.execute() if entries else []
            for entry, row in zip(entries, values, strict=True):
                scanned += 1
                raw = {name: value for name, value in zip(LIST_FIELDS, row, strict=True) if value is not None}
                if not raw:
                    continue  # its record expired
                record = decode_record(raw)
                if not f.matches(record):
                    last = entry
                    continue
                if len(jobs) == limit:
                    return JobPage(jobs, _cursor(last), total, scanned, False)
                jobs.append({**public(record), "errorLine": _first_line(record.get("error"))})
                last = entry
            if len(rows) < chunk:
                return JobPage(jobs, None, total, scanned, False)
            if f.scanned and scanned >= SCAN_LIMIT:
                return JobPage(jobs, _cursor(last), total, scanned, True)
            chunk = min(chunk * 2, 400)  # a filter that matches few: read more at once


def _cursor(entry: tuple[int, str] | None) -> str | None:
    return f"{entry[0]}-{entry[1]}" if entry else None


def parse_cursor(raw: str | None) -> tuple[int, str] | None:
    if not raw:
        return None
    score, _, member = raw.partition("-")
    return (int(score), member) if score.isdigit() and member else None


def _first_line(error: str | None) -> str:
    line = (error or "").strip().splitlines()[0] if (error or "").strip() else ""
    return line[:160]


@dataclass(frozen=True)
class DeadLetters:
    by_type: list[tuple[str, int]]
    top_errors: list[tuple[str, int]]
    sampled: int
    total: int


async def dead_letters(api: Api, job_name: str | None) -> DeadLetters:
    """Failed jobs per job type (exact), and the top errors among the newest ERROR_SAMPLE (of one job type)."""
    keys = api.keys
    names = api.registry.names()
    async with deadline():
        async with api.client.pipeline(transaction=False) as pipeline:
            for name in names:
                pipeline.zcard(keys.state_index(FAILED, name))
            pipeline.zrevrange(keys.state_index(FAILED, job_name), 0, ERROR_SAMPLE - 1)
            replies: list[Any] = await pipeline.execute()
        ids = [_text(member) for member in replies[-1]]
        async with api.client.pipeline(transaction=False) as pipeline:
            for job_id in ids:
                pipeline.hget(keys.job(job_id), "error")
            errors: list[Any] = await pipeline.execute() if ids else []
    by_type = sorted(zip(names, (int(n) for n in replies[:-1]), strict=True), key=lambda item: -item[1])
    counted = Counter(_first_line(_text(error)) or "(no error text)" for error in errors if error is not None)
    total = sum(n for name, n in by_type if job_name in (None, name))
    return DeadLetters(by_type=by_type, top_errors=counted.most_common(10), sampled=len(ids), total=total)


async def count_matching_failed(
    api: Api, job_name: str | None, error_text: str | None, *, limit: int
) -> tuple[int, bool]:
    """How many failed jobs (of a job type) match an error text, looking at most at `limit`:
    (count, whether the look stopped at the limit). Without a text: the index's exact size."""
    index = api.keys.state_index(FAILED, job_name)
    async with deadline():
        if not error_text:
            return int(await api.client.zcard(index)), False
        ids = [_text(m) for m in await api.client.zrevrange(index, 0, limit - 1)]
        async with api.client.pipeline(transaction=False) as pipeline:
            for job_id in ids:
                pipeline.hget(api.keys.job(job_id), "error")
            errors: list[Any] = await pipeline.execute() if ids else []
    needle = error_text.lower()
    count = sum(1 for error in errors if error is not None and needle in _text(error).lower())
    return count, len(ids) == limit
