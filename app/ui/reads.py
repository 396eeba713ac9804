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
from app.outcomes import packed
from app.outcomes.record import FAILED, PUBLIC_FIELDS, RETRYING, SUCCEEDED, decode_record, now_ms, public

#: A page of jobs.
PAGE = 50
#: Filters the indexes cannot apply (queue, error text) look at most this many entries per page.
SCAN_LIMIT = 1_000
#: Top errors are counted among this many of the newest failed jobs.
ERROR_SAMPLE = 200
LIST_FIELDS = PUBLIC_FIELDS
MINUTE_COUNTS_SCRIPT = lua("minute_counts")
SCAN_SCRIPT = lua("console_scan")
TOP_ERRORS_SCRIPT = lua("console_top_errors")
#: console_scan.lua's reason to stop when it has examined its budget of entries.
SCAN_BUDGET_SPENT = 2
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
    text are looked for among at most SCAN_LIMIT entries a page."""

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


@dataclass
class JobPage:
    jobs: list[dict[str, Any]]
    next_cursor: str | None
    #: How many entries the index holds in the time range (exact), and for a scanned filter how
    #: many of the entries read matched.
    total: int
    scanned: int = 0
    scan_capped: bool = False
    #: `total` is a lower bound (a time range of more buckets than one count adds up).
    total_at_least: bool = False
    #: `total` leaves the succeeded jobs out (they are counted per second, not per job type).
    succeeded_uncounted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _bounds(f: JobFilter) -> tuple[int | str, int | str]:
    top: int | str = "+inf" if f.until_ms is None else f.until_ms * 1000 + 999
    low: int | str = "-inf" if f.since_ms is None else f.since_ms * 1000
    return top, low


def ascii_lower(text: str) -> str:
    """What the scan script's `string.lower` does: A-Z to a-z, nothing else."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = {code: code + 32 for code in range(ord("A"), ord("Z") + 1)}


def scan_needle(error_text: str | None) -> tuple[str, bool]:
    """What console_scan.lua looks for in the error texts (whose case it folds for ASCII letters
    only), and whether its matches are exact. For a text with other letters, it looks for the
    longest ASCII run of the text, and the caller keeps the matches whose error contains the text
    case-insensitively (as the bulk actions do)."""
    if not error_text:
        return "", True
    if error_text.isascii():
        return ascii_lower(error_text), True
    runs = "".join(c if c.isascii() else "\0" for c in error_text.lower()).split("\0")
    return max(runs, key=len), False


def error_matches(error_text: str | None, error: str | None) -> bool:
    return not error_text or (error is not None and error_text.lower() in error.lower())


@dataclass(frozen=True)
class Scan:
    """One call of console_scan.lua: how many entries it examined, why it stopped, how many matched,
    the last entry examined, and the places (score, id) of the matches (when collected)."""

    examined: int
    stop: int
    found: int
    last: tuple[int, str] | None
    places: list[tuple[int, str]]

    @property
    def ids(self) -> list[str]:
        return [job_id for _, job_id in self.places]

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> Scan:
        examined, stop, found, score, member, *matches = reply
        last = (_score(_text(score)), _text(member)) if _text(score) else None
        places = [(_score(_text(s)), _text(m)) for s, m in zip(matches[::2], matches[1::2], strict=True)]
        return cls(int(examined), int(stop), int(found), last, places)


def _score(text: str) -> int:
    return int(text) if text.isdigit() else int(float(text))


def _scan_args(
    api: Api, index: str, f: JobFilter, top: int | str, low: int | str, cursor: tuple[int, str] | None,
    *, want: int, budget: int,
) -> list[Any]:  # fmt: skip
    return [
        SCAN_SCRIPT, 1, index, cursor[0] if cursor else top, low, cursor[0] if cursor else "",
        cursor[1] if cursor else "", f.queue or "", scan_needle(f.error_text)[0], want, budget,
        api.keys.job_prefix(),
    ]  # fmt: skip


async def list_jobs(api: Api, f: JobFilter, *, limit: int = PAGE) -> JobPage:
    """Newest first, from the cursor (`<score>-<jobId>` of the last entry shown), in two round
    trips: the range's size and one call of console_scan.lua (which reads of each entry only its
    queue and error, and examines at most SCAN_LIMIT of them), then the matches' records. Succeeded
    jobs (listed alone, or among all) come from their packed records, merged in (packed.py)."""
    index = api.keys.state_index(f.state or "all", f.job_name)
    top, low = _bounds(f)
    with_packed = f.state in (None, SUCCEEDED)
    count_packed = with_packed and not f.job_name
    timed = f.since_ms is not None or f.until_ms is not None
    exact = scan_needle(f.error_text)[1]
    async with deadline():
        async with api.client.pipeline(transaction=False) as pipeline:
            pipeline.zcount(index, low, top)
            pipeline.eval(*_scan_args(api, index, f, top, low, f.cursor, want=limit, budget=SCAN_LIMIT))
            # The packed records are counted per bucket (a second), not per job type.
            if count_packed and not timed:
                pipeline.hget(api.keys.succeeded_sizes(), packed.TOTAL_FIELD)
            elif count_packed:
                run_commands(pipeline, [packed.count_command(api.keys, since_ms=f.since_ms, until_ms=f.until_ms)])
            replies: list[Any] = await pipeline.execute()
        total, scan = int(replies[0]), Scan.parse(replies[1])
        at_least = False
        if count_packed:
            packed_count, capped_count = replies[2] if timed else (replies[2] or 0, 0)
            total, at_least = total + int(packed_count), bool(int(capped_count))
        values: list[Any] = []
        if scan.ids:
            async with api.client.pipeline(transaction=False) as pipeline:
                for job_id in scan.ids:
                    pipeline.hmget(api.keys.job(job_id), *LIST_FIELDS)
                values = await pipeline.execute()
        listed = []
        for place, row in zip(scan.places, values, strict=True):
            raw = {name: value for name, value in zip(LIST_FIELDS, row, strict=True) if value is not None}
            if raw:  # else its record expired since the scan (or it succeeded, and is among the packed)
                record = decode_record(raw)
                if not exact and not error_matches(f.error_text, record.get("error")):
                    continue
                listed.append((place, _listed(record)))
        found = None
        if with_packed:
            # A page full from the index ends at its last match: packed records below it are not read.
            above = listed[limit - 1][0] if len(listed) >= limit else None
            found = await packed.page(
                api.client, api.keys, below=f.cursor, limit=limit, keep=lambda record: _packed_matches(f, record),
                must_contain=packed.packed_texts(f.job_name, f.queue, f.error_text),
                budget=SCAN_LIMIT, since_ms=f.since_ms, until_ms=f.until_ms, above=above,
            )  # fmt: skip
    streams = [(listed, scan.last if scan.stop else None)]
    if found is not None:
        streams.append(([(e.place, _listed(e.record)) for e in found.entries], found.last if found.more else None))
    jobs, next_place = packed.merge(streams, limit)
    examined = scan.examined + (found.examined if found else 0)
    capped = scan.stop == SCAN_BUDGET_SPENT or (found is not None and found.examined >= SCAN_LIMIT)
    return JobPage(
        jobs, _cursor(next_place), total, examined, capped, total_at_least=at_least,
        succeeded_uncounted=with_packed and not count_packed,
    )  # fmt: skip


def _listed(record: dict[str, Any]) -> dict[str, Any]:
    return {**public(record), "errorLine": _first_line(record.get("error"))}


def _packed_matches(f: JobFilter, record: dict[str, Any]) -> bool:
    """What console_scan.lua and the indexes check of an entry, checked on a packed record."""
    return (
        f.job_name in (None, record.get("jobName"))
        and f.queue in (None, "", record.get("queue"))
        and error_matches(f.error_text, record.get("error"))
    )


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
    """Failed jobs per job type (exact), and the top errors among the newest ERROR_SAMPLE (of one
    job type), grouped in Redis (console_top_errors.lua): one round trip."""
    keys = api.keys
    names = api.registry.names()
    async with deadline(), api.client.pipeline(transaction=False) as pipeline:
        for name in names:
            pipeline.zcard(keys.state_index(FAILED, name))
        pipeline.eval(TOP_ERRORS_SCRIPT, 1, keys.state_index(FAILED, job_name), ERROR_SAMPLE, keys.job_prefix())
        replies: list[Any] = await pipeline.execute()
    by_type = sorted(zip(names, (int(n) for n in replies[:-1]), strict=True), key=lambda item: -item[1])
    sampled, *groups = replies[-1]
    counted: Counter[str] = Counter()
    for text, n in zip(groups[::2], groups[1::2], strict=True):
        counted[_first_line(_text(text)) or "(no error text)"] += int(n)
    total = sum(n for name, n in by_type if job_name in (None, name))
    return DeadLetters(by_type=by_type, top_errors=counted.most_common(10), sampled=int(sampled), total=total)


#: count_matching_failed examines at most this many entries per call of console_scan.lua (each
#: call holds Redis for a few ms only).
COUNT_CHUNK = 2_500


async def count_matching_failed(
    api: Api, job_name: str | None, error_text: str | None, *, limit: int
) -> tuple[int, bool]:
    """How many failed jobs (of a job type) match an error text, looking at most at `limit`:
    (count, whether the look stopped at the limit). Without a text: the index's exact size."""
    index = api.keys.state_index(FAILED, job_name)
    f = JobFilter(state=FAILED, job_name=job_name, error_text=error_text)
    count, examined, cursor = 0, 0, None
    async with deadline():
        if not error_text:
            return int(await api.client.zcard(index)), False
        if not scan_needle(error_text)[1]:
            return await _count_in_python(api, index, error_text, limit=limit)
        while examined < limit:
            args = _scan_args(api, index, f, "+inf", "-inf", cursor, want=0, budget=min(COUNT_CHUNK, limit - examined))
            scan = Scan.parse(await api.client.eval(*args))
            count, examined, cursor = count + scan.found, examined + scan.examined, scan.last
            if scan.stop != SCAN_BUDGET_SPENT or cursor is None:
                return count, False
    return count, True


async def _count_in_python(api: Api, index: str, error_text: str, *, limit: int) -> tuple[int, bool]:
    """count_matching_failed for a text with letters other than ASCII (case-folded as Python does)."""
    ids = [_text(m) for m in await api.client.zrevrange(index, 0, limit - 1)]
    async with api.client.pipeline(transaction=False) as pipeline:
        for job_id in ids:
            pipeline.hget(api.keys.job(job_id), "error")
        errors: list[Any] = await pipeline.execute() if ids else []
    count = sum(1 for error in errors if error is not None and error_matches(error_text, _text(error)))
    return count, len(ids) == limit
