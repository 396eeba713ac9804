"""What the console's pages read from Redis, each page in a bounded number of round trips and
never a KEYS or SCAN of the keyspace: the indexes, the queues' figures, the live workers, and
the per-minute outcome counts.

On a Redis Cluster each queue has a keyspace of its own (app/keys.py): a page reads every keyspace
it needs at once, each on its own node with the same commands as on one Redis, and merges them
(counts added up, listings merged by place, workers by broker id). On one Redis there is one
keyspace: the commands and round trips are those of one."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio

from app.api.context import Api
from app.api.errors import deadline
from app.api.queue_state import QueueReader, QueueState
from app.connection.commands import run_commands
from app.connection.scripts import lua
from app.connection.shards import Shard
from app.keys import Keys, delay_queue
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

    @classmethod
    def add(cls, parts: Sequence[Minutes]) -> Minutes:
        """The counts of several keyspaces' bars (of one size), bar by bar."""
        first, *others = parts
        if not others:
            return first
        counts = {outcome: [sum(bars) for bars in zip(*(p.counts[outcome] for p in parts), strict=True)]
                  for outcome in OUTCOMES}  # fmt: skip
        return cls(size=first.size, counts=counts)


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


#: A keyspace's shard and the queues (of those asked for) whose keys it holds.
Part = tuple[Shard[redis.asyncio.Redis], list[str]]


def keyspaces(api: Api, queues: Sequence[str] | None = None) -> list[Part]:
    """The keyspaces of these queues (default: every declared one), each with its queues, in the
    order of `queues`: on one Redis the one, holding them all."""
    groups: dict[Keys, list[str]] = {}
    for queue in api.registry.queues() if queues is None else queues:
        groups.setdefault(api.keys.for_queue(queue), []).append(queue)
    if not groups:  # no queue declared: the root keys alone
        return [(Shard(api.keys, api.shards.client(api.keys)), [])]
    return [(Shard(keys, api.shards.client(keys)), some) for keys, some in groups.items()]


def shards_of(api: Api, queue: str | None = None) -> list[Shard[redis.asyncio.Redis]]:
    """The shards a listing reads: the queue's alone when it names one, else every declared
    queue's (a job type's jobs can be on any queue: an enqueue may choose another one)."""
    if queue:
        return [api.shards.for_queue(queue)]
    return [shard for shard, _ in keyspaces(api)]


def _reader_of(reader: QueueReader, keys: Keys) -> QueueReader:
    return reader if keys == reader.keys else dataclasses.replace(reader, keys=keys)


@dataclass(frozen=True)
class _OverviewPart:
    """What one keyspace adds to the overview."""

    queues: list[QueueState]
    retrying: Counter[str]
    beats: list[tuple[str, int]]
    hour: Minutes
    day: Minutes


async def overview(api: Api) -> Overview:
    """Everything the overview shows, in two round trips (per keyspace, all at once): the queues,
    the retrying counts, the live workers' ids and a day of minute counts; then the workers'
    descriptions and jobs in flight."""
    now = now_ms()
    reader = queue_reader(api)
    parts = keyspaces(api, reader.queues)
    async with deadline():
        read = await asyncio.gather(*(_overview_part(api, reader, part, now) for part in parts))
    states = {state.name: state for part in read for state in part.queues}
    retrying: Counter[str] = Counter()
    beats: dict[str, int] = {}
    for part in read:
        retrying.update(part.retrying)
        for broker_id, beat in part.beats:
            beats[broker_id] = max(beat, beats.get(broker_id, beat))
    hour, day = Minutes.add([part.hour for part in read]), Minutes.add([part.day for part in read])
    seen = [(part, [broker_id for broker_id, _ in got.beats]) for part, got in zip(parts, read, strict=True)]
    workers = await _workers(seen, beats)
    return Overview(
        queues=[states[queue] for queue in reader.queues], retrying=dict(retrying), workers=workers, hour=hour,
        day=day, at_ms=now,
    )  # fmt: skip


async def _overview_part(api: Api, reader: QueueReader, part: Part, now: int) -> _OverviewPart:
    (shard, queues), keys = part, part[0].keys
    local = _reader_of(reader, keys)
    job_types = list(api.registry)
    this_minute = now // MINUTE_MS
    minutes = [this_minute - offset for offset in range(1439, -1, -1)]
    async with shard.client.pipeline(transaction=False) as pipeline:
        run_commands(pipeline, [local.command(now, queues)])
        for job_type in job_types:
            pipeline.zcard(keys.state_index(RETRYING, job_type.name))
        pipeline.zrangebyscore(keys.heartbeats(), now - api.settings.heartbeat_timeout_ms, "+inf", withscores=True)
        minute_keys = [keys.minute_counts(minute) for minute in minutes]
        pipeline.eval(MINUTE_COUNTS_SCRIPT, 60, *minute_keys[-60:], 1)
        pipeline.eval(MINUTE_COUNTS_SCRIPT, len(minute_keys), *minute_keys, 10)
        replies: list[Any] = await pipeline.execute()
    retrying: Counter[str] = Counter()
    for job_type, count in zip(job_types, replies[1 : 1 + len(job_types)], strict=True):
        # A job of a type enqueued on another queue than its type's is in that queue's keyspace
        # (on a Redis Cluster, a keyspace holds one queue): counted there.
        retrying[job_type.queue if job_type.queue in queues else queues[0]] += int(count)
    return _OverviewPart(
        queues=local.parse(replies[0], now, queues),
        retrying=retrying,
        beats=[(_text(member), int(score)) for member, score in replies[1 + len(job_types)]],
        hour=Minutes.parse(1, replies[2 + len(job_types)]),
        day=Minutes.parse(10, replies[3 + len(job_types)]),
    )


async def _workers(seen: list[tuple[Part, list[str]]], beats: dict[str, int]) -> list[Worker]:
    """The live workers: a worker stamps its heartbeat and description in the keyspace of each
    queue it declares, and its jobs in flight are in each queue's keyspace: one worker per broker
    id, its description from any keyspace, its jobs in flight added up over its queues."""
    seen = [(part, ids) for part, ids in seen if ids]
    if not seen:
        return []
    async with deadline():
        replies = await asyncio.gather(*(_worker_part(part, ids) for part, ids in seen))
    described: dict[str, dict[str, Any]] = {}
    in_flight: Counter[str] = Counter()
    for (_, ids), (descriptions, counts) in zip(seen, replies, strict=True):
        for broker_id, raw, count in zip(ids, descriptions, counts, strict=True):
            in_flight[broker_id] += count
            if broker_id not in described or not described[broker_id]:
                try:
                    described[broker_id] = json.loads(raw) if raw else {}
                except ValueError:
                    described[broker_id] = {}
    workers = []
    for broker_id, beat in beats.items():
        description = described.get(broker_id, {})
        workers.append(
            Worker(
                broker_id=broker_id,
                host=str(description.get("host") or "?"),
                pid=description.get("pid"),
                parent_pid=description.get("ppid"),
                threads=description.get("threads"),
                in_flight=in_flight[broker_id],
                last_beat_ms=beat,
            )
        )
    return sorted(workers, key=lambda w: (w.host, w.parent_pid or 0, w.pid or 0))


async def _worker_part(part: Part, ids: list[str]) -> tuple[list[Any], list[int]]:
    """One keyspace's descriptions of these workers, and each one's jobs in flight on its queues."""
    (shard, queues), keys = part, part[0].keys
    names = [name for queue in queues for name in (queue, delay_queue(queue))]
    async with shard.client.pipeline(transaction=False) as pipeline:
        pipeline.hmget(keys.workers(), *ids)
        for broker_id in ids:
            for name in names:
                pipeline.scard(keys.acks(broker_id, name))
        replies: list[Any] = await pipeline.execute()
    descriptions, counts = replies[0], replies[1:]
    return descriptions, [sum(int(c) for c in counts[n * len(names) : (n + 1) * len(names)]) for n in range(len(ids))]


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
    keys: Keys, index: str, f: JobFilter, top: int | str, low: int | str, cursor: tuple[int, str] | None,
    *, want: int, budget: int,
) -> list[Any]:  # fmt: skip
    return [
        SCAN_SCRIPT, 1, index, cursor[0] if cursor else top, low, cursor[0] if cursor else "",
        cursor[1] if cursor else "", f.queue or "", scan_needle(f.error_text)[0], want, budget,
        keys.job_prefix(),
    ]  # fmt: skip


#: A listing of places and items, and its frontier (packed.merge's streams).
Stream = tuple[list[tuple[tuple[int, str], dict[str, Any]]], tuple[int, str] | None]


@dataclass
class _ShardPage:
    """What one keyspace gives a page of jobs."""

    streams: list[Stream]
    total: int
    at_least: bool
    examined: int
    capped: bool


async def list_jobs(api: Api, f: JobFilter, *, limit: int = PAGE) -> JobPage:
    """Newest first, from the cursor (`<score>-<jobId>` of the last entry shown), in two round
    trips: the range's size and one call of console_scan.lua (which reads of each entry only its
    queue and error, and examines at most SCAN_LIMIT of them), then the matches' records. Succeeded
    jobs (listed alone, or among all) come from their packed records, merged in (packed.py). On a
    Redis Cluster every keyspace the filter needs is read so, at once, and the pages merged by place
    (a job's place is unique: its id is)."""
    with_packed = f.state in (None, SUCCEEDED)
    count_packed = with_packed and not f.job_name
    async with deadline():
        parts = await asyncio.gather(*(_list_shard(shard, f, limit) for shard in shards_of(api, f.queue)))
    jobs, next_place = packed.merge([stream for part in parts for stream in part.streams], limit)
    return JobPage(
        jobs, _cursor(next_place), sum(part.total for part in parts), sum(part.examined for part in parts),
        any(part.capped for part in parts), total_at_least=any(part.at_least for part in parts),
        succeeded_uncounted=with_packed and not count_packed,
    )  # fmt: skip


async def _list_shard(shard: Shard[redis.asyncio.Redis], f: JobFilter, limit: int) -> _ShardPage:
    """One keyspace's page of a filter (list_jobs' two round trips, and the packed records')."""
    keys, client = shard.keys, shard.client
    index = keys.state_index(f.state or "all", f.job_name)
    top, low = _bounds(f)
    with_packed = f.state in (None, SUCCEEDED)
    count_packed = with_packed and not f.job_name
    timed = f.since_ms is not None or f.until_ms is not None
    exact = scan_needle(f.error_text)[1]
    async with client.pipeline(transaction=False) as pipeline:
        pipeline.zcount(index, low, top)
        pipeline.eval(*_scan_args(keys, index, f, top, low, f.cursor, want=limit, budget=SCAN_LIMIT))
        # The packed records are counted per bucket (a second), not per job type.
        if count_packed and not timed:
            pipeline.hget(keys.succeeded_sizes(), packed.TOTAL_FIELD)
        elif count_packed:
            run_commands(pipeline, [packed.count_command(keys, since_ms=f.since_ms, until_ms=f.until_ms)])
        replies: list[Any] = await pipeline.execute()
    total, scan = int(replies[0]), Scan.parse(replies[1])
    at_least = False
    if count_packed:
        packed_count, capped_count = replies[2] if timed else (replies[2] or 0, 0)
        total, at_least = total + int(packed_count), bool(int(capped_count))
    values: list[Any] = []
    if scan.ids:
        async with client.pipeline(transaction=False) as pipeline:
            for job_id in scan.ids:
                pipeline.hmget(keys.job(job_id), *LIST_FIELDS)
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
            client, keys, below=f.cursor, limit=limit, keep=lambda record: _packed_matches(f, record),
            must_contain=packed.packed_texts(f.job_name, f.queue, f.error_text),
            budget=SCAN_LIMIT, since_ms=f.since_ms, until_ms=f.until_ms, above=above,
        )  # fmt: skip
    streams: list[Stream] = [(listed, scan.last if scan.stop else None)]
    if found is not None:
        streams.append(([(e.place, _listed(e.record)) for e in found.entries], found.last if found.more else None))
    examined = scan.examined + (found.examined if found else 0)
    capped = scan.stop == SCAN_BUDGET_SPENT or (found is not None and found.examined >= SCAN_LIMIT)
    return _ShardPage(streams, total, at_least, examined, capped)


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
    job type), grouped in Redis (console_top_errors.lua): one round trip. On a Redis Cluster, the
    same of each keyspace at once: the counts added up, the top errors among the newest
    ERROR_SAMPLE of each queue."""
    names = api.registry.names()
    async with deadline():
        replies = await asyncio.gather(*(_dead_part(shard, names, job_name) for shard in shards_of(api)))
    by_count: Counter[str] = Counter({name: 0 for name in names})
    counted: Counter[str] = Counter()
    sampled = 0
    for reply in replies:
        for name, n in zip(names, reply[:-1], strict=True):
            by_count[name] += int(n)
        part_sampled, *groups = reply[-1]
        sampled += int(part_sampled)
        for text, n in zip(groups[::2], groups[1::2], strict=True):
            counted[_first_line(_text(text)) or "(no error text)"] += int(n)
    by_type = sorted(((name, by_count[name]) for name in names), key=lambda item: -item[1])
    total = sum(n for name, n in by_type if job_name in (None, name))
    return DeadLetters(by_type=by_type, top_errors=counted.most_common(10), sampled=sampled, total=total)


async def _dead_part(shard: Shard[redis.asyncio.Redis], names: Sequence[str], job_name: str | None) -> list[Any]:
    keys = shard.keys
    async with shard.client.pipeline(transaction=False) as pipeline:
        for name in names:
            pipeline.zcard(keys.state_index(FAILED, name))
        pipeline.eval(TOP_ERRORS_SCRIPT, 1, keys.state_index(FAILED, job_name), ERROR_SAMPLE, keys.job_prefix())
        return await pipeline.execute()  # type: ignore[no-any-return]


#: count_matching_failed examines at most this many entries per call of console_scan.lua (each
#: call holds Redis for a few ms only).
COUNT_CHUNK = 2_500


async def count_matching_failed(
    api: Api, job_name: str | None, error_text: str | None, *, limit: int
) -> tuple[int, bool]:
    """How many failed jobs (of a job type) match an error text, looking at most at `limit`:
    (count, whether the look stopped at the limit). Without a text: the index's exact size. On a
    Redis Cluster, over each keyspace in turn, `limit` entries in all."""
    count, left = 0, limit
    async with deadline():
        for shard in shards_of(api):
            if left <= 0:
                return count, True
            found, examined, capped = await _count_in(shard, job_name, error_text, limit=left)
            count, left = count + found, left - examined
            if capped:
                return count, True
    return count, False


async def _count_in(
    shard: Shard[redis.asyncio.Redis], job_name: str | None, error_text: str | None, *, limit: int
) -> tuple[int, int, bool]:
    """One keyspace's part of count_matching_failed: the count, how many entries it examined (none
    for the count without a text) and whether it stopped at the limit."""
    keys, client = shard.keys, shard.client
    index = keys.state_index(FAILED, job_name)
    f = JobFilter(state=FAILED, job_name=job_name, error_text=error_text)
    count, examined, cursor = 0, 0, None
    if not error_text:
        return int(await client.zcard(index)), 0, False
    if not scan_needle(error_text)[1]:
        return await _count_in_python(shard, index, error_text, limit=limit)
    while examined < limit:
        args = _scan_args(keys, index, f, "+inf", "-inf", cursor, want=0, budget=min(COUNT_CHUNK, limit - examined))
        scan = Scan.parse(await client.eval(*args))
        count, examined, cursor = count + scan.found, examined + scan.examined, scan.last
        if scan.stop != SCAN_BUDGET_SPENT or cursor is None:
            return count, examined, False
    return count, examined, True


async def _count_in_python(
    shard: Shard[redis.asyncio.Redis], index: str, error_text: str, *, limit: int
) -> tuple[int, int, bool]:
    """_count_in for a text with letters other than ASCII (case-folded as Python does)."""
    client = shard.client
    ids = [_text(m) for m in await client.zrevrange(index, 0, limit - 1)]
    async with client.pipeline(transaction=False) as pipeline:
        for job_id in ids:
            pipeline.hget(shard.keys.job(job_id), "error")
        errors: list[Any] = await pipeline.execute() if ids else []
    count = sum(1 for error in errors if error is not None and error_matches(error_text, _text(error)))
    return count, len(ids), len(ids) == limit
