"""Succeeded records, packed: a few hundred bytes each instead of about 1,900.

A job's record is a hash while the job is alive (queued, running, retrying). When it succeeds,
the succeeded script (succeeded.lua) packs the hash into one JSON array and moves it into the
hash of its *bucket*: the succeeded jobs whose ids were made in the same second (a job id carries
its time: app/job_ids.py). The record key and its index entries are gone; the bucket is found
from the job id alone, and the buckets are listed, newest first, in one small zset. What this
saves: a hash with a `data` field over 64 bytes is a hashtable (Redis keeps listpacks only
below `hash-max-listpack-value`), a key costs its name and expiry, and each of the four index
entries about 200 bytes. Failed, canceled and skipped records stay hashes with their indexes:
they are few, and they are acted on (retried, deleted, grouped by error).

Retention: a bucket expires SUCCEEDED_RETENTION_SECONDS after the last record put in it, and
MAX_SUCCEEDED_RECORDS removes whole buckets, oldest first, in the succeeded script itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio

from app.connection.scripts import lua, lua_list
from app.job_ids import job_id_time_ms
from app.keys import Keys
from app.outcomes.record import FIELDS, SUCCEEDED, decode_record, index_score

#: The first value of a packed record: which field list it follows.
LAYOUT = 1
#: The fields of a packed record, in order: those every succeeded job has first, so that the
#: absent ones are mostly at the end, where they are left off. `jobId` is the bucket's field.
PACKED_FIELDS = (
    "jobName", "queue", "state", "attempts", "maxRetries", "enqueuedAt", "startedAt", "finishedAt", "durationMs",
    "executions", "deliveries", "updatedAt", "data", "worker", "priority", "result", "runAt", "error", "traceback",
    "nextRetryAt", "redeliveries", "redeliveredAt", "requeues", "deadLetterId", "cancelRequestedAt", "canceledAt",
    "progress", "progressMessage", "progressAt", "history",
)  # fmt: skip
assert set(PACKED_FIELDS) == set(FIELDS) - {"jobId"}, "a record field is missing from the packed layout"
#: The fields that are times (ms since the epoch): packed as ms after the time the job's id carries.
TIME_FIELDS = (
    "enqueuedAt", "startedAt", "finishedAt", "nextRetryAt", "runAt", "redeliveredAt", "updatedAt",
    "cancelRequestedAt", "canceledAt", "progressAt",
)  # fmt: skip
assert all(FIELDS[name] == "integer" for name in TIME_FIELDS)
#: How a packed field's value is written: 't' a time after the id's, 'i' an integer, 'j' JSON as it
#: is, 's' a JSON string.
PACKED_KINDS = {
    name: "t" if name in TIME_FIELDS else {"integer": "i", "any": "j"}.get(FIELDS[name], "s") for name in PACKED_FIELDS
}

#: How long a bucket spans (ms of a job id's time). A bucket costs about 300 bytes of its own
#: (its key, its entries in the bucket list and sizes): spread over its jobs from about 10 jobs/s.
BUCKET_MS = 1_000
#: The sizes hash's field that counts the records of every bucket.
TOTAL_FIELD = "total"
#: Placeholders of the Lua scripts that pack a record or find its bucket.
PACK_VALUES = {
    "LAYOUT": LAYOUT,
    "PACKED_FIELDS": lua_list(PACKED_FIELDS),
    "PACKED_KINDS": ", ".join(f"{name} = '{kind}'" for name, kind in PACKED_KINDS.items()),
    "TOTAL_FIELD": TOTAL_FIELD,
}


PRUNE_BUCKETS_SCRIPT = lua("drop_bucket", "prune_buckets", TOTAL_FIELD=TOTAL_FIELD)
#: Buckets a cleanup looks at, at most, in one call.
PRUNE_AT_MOST = 1_000


def prune_command(keys: Keys, *, older_than_ms: int, offset: int = 0) -> tuple[Any, ...]:
    """One call that takes expired buckets off the bucket list and corrects the counts, looking at
    the buckets of ids made before `older_than_ms` (now minus the retention: no newer one can have
    expired), from `offset` on. Its reply: how many it looked at, took off, and their records.
    (The succeeded script takes the oldest off each time it starts a bucket; cleanup the rest.)"""
    return (
        "EVAL", PRUNE_BUCKETS_SCRIPT, 2, keys.succeeded_buckets(), keys.succeeded_sizes(),
        keys.succeeded_bucket_prefix(), PRUNE_AT_MOST, older_than_ms // BUCKET_MS, offset,
    )  # fmt: skip


COUNT_BUCKETS_SCRIPT = lua("count_buckets")
#: A count of the records in a time range adds up the sizes of this many buckets at most (each is
#: a second's: 10,000 is close to 3 hours at every second's bucket in use), in a few ms of Redis.
COUNT_AT_MOST = 10_000


def count_command(keys: Keys, *, since_ms: int | None, until_ms: int | None) -> tuple[Any, ...]:
    """One call counting the records of the buckets of ids made from `since_ms` to `until_ms` (to
    the second: a bucket at either end counts whole). Its reply: the count, and 1 if the range
    held more than COUNT_AT_MOST buckets (the count is then of the oldest of them: a lower bound)."""
    low = "-inf" if since_ms is None else since_ms // BUCKET_MS
    high = "+inf" if until_ms is None else until_ms // BUCKET_MS
    return ("EVAL", COUNT_BUCKETS_SCRIPT, 2, keys.succeeded_buckets(), keys.succeeded_sizes(), low, high, COUNT_AT_MOST)


def bucket_of(job_id: str) -> int:
    """The bucket of a job's packed record: the second its id was made in (0 for an id that does
    not carry its time: an older random one)."""
    made_ms = job_id_time_ms(job_id)
    return 0 if made_ms is None else made_ms // BUCKET_MS


def entry_score(job_id: str) -> int:
    """Where a packed record sorts among index entries (whose scores are index_score of a time)."""
    return index_score(job_id_time_ms(job_id) or 0)


def bucket_key(keys: Keys, job_id: str) -> str:
    return keys.succeeded_bucket(bucket_of(job_id))


def unpack(packed: bytes | str, job_id: str) -> dict[str, Any]:
    """A packed record, decoded as decode_record decodes a hash. One that cannot be read (a value
    written by something other than our code) reads as a succeeded job with the reason as its
    error, so that it cannot break a listing."""
    return decode_record(_fields_or_reason(packed, job_id), parsed_json=True)


def _fields_or_reason(packed: bytes | str, job_id: str) -> dict[str, Any]:
    try:
        return unpack_fields(packed, job_id)
    except (ValueError, TypeError) as error:
        return {"jobId": job_id, "state": SUCCEEDED, "error": f"its packed record cannot be read: {error}"}


def unpack_fields(packed: bytes | str, job_id: str) -> dict[str, Any]:
    """A packed record's fields as they were packed: strings, integers (times back to ms since the
    epoch), and JSON fields parsed; ValueError if it is not a packed record of this layout."""
    layout, *values = json.loads(packed, strict=False)  # cjson keeps control characters in strings raw
    if layout != LAYOUT:
        raise ValueError(f"packed record of job {job_id} has layout {layout}, not {LAYOUT}")
    base = job_id_time_ms(job_id) or 0
    fields = {
        name: value + base if PACKED_KINDS[name] == "t" and type(value) is int else value
        for name, value in zip(PACKED_FIELDS, values, strict=False)
        if value is not None
    }
    return {"jobId": job_id, **fields}


@dataclass(frozen=True)
class Entry:
    """A packed record as a listing sees it: its place (score, job id) and its record."""

    score: int
    job_id: str
    record: dict[str, Any]

    @property
    def place(self) -> tuple[int, str]:
        return (self.score, self.job_id)


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    #: There may be more below the last entry examined (a budget spent, or the page full).
    more: bool
    #: The place of the last record examined: where the next page starts.
    last: tuple[int, str] | None
    examined: int


async def get(client: redis.asyncio.Redis, keys: Keys, job_id: str) -> dict[str, Any] | None:
    """A succeeded job's packed record, decoded, or None."""
    packed = await client.hget(bucket_key(keys, job_id), job_id)
    return None if packed is None else unpack(packed, job_id)


#: Buckets read per round trip while listing.
BUCKETS_AT_ONCE = 4


async def page(
    client: redis.asyncio.Redis,
    keys: Keys,
    *,
    below: tuple[int, str] | None,
    limit: int,
    keep: Callable[[dict[str, Any]], bool] = lambda record: True,
    must_contain: Sequence[str] = (),
    budget: int = 10_000,
    since_ms: int | None = None,
    until_ms: int | None = None,
    above: tuple[int, str] | None = None,
) -> Page:
    """Packed records newest first (by their ids' time), from just below the place `below`, those
    `keep` accepts (given the fields as unpack_fields reads them), until `limit` are found or
    `budget` records were examined. `since_ms` and `until_ms` bound the ids' time. `must_contain`:
    texts (lowercase) that a record `keep` can accept has in its packed form, lowercased (see
    `packed_texts`): the others are passed over unread. `above`: a place the caller's page ends at
    anyway (another listing already has a page full down to it): records below it are not read, and
    the page reports it as its frontier."""
    wanted = [text.encode() for text in must_contain]
    top = "+inf" if below is None else _bucket_of_score(below[0])
    if until_ms is not None:
        top = until_ms // BUCKET_MS if top == "+inf" else min(int(top), until_ms // BUCKET_MS)
    low: int | str = "-inf" if since_ms is None else since_ms // BUCKET_MS
    entries: list[Entry] = []
    examined, skip = 0, 0
    last = below
    while True:
        buckets: Any = await client.zrevrangebyscore(
            keys.succeeded_buckets(), top, low, start=skip, num=BUCKETS_AT_ONCE
        )
        if not buckets:
            return Page(entries, False, last, examined)
        async with client.pipeline(transaction=False) as pipeline:
            for bucket in buckets:
                pipeline.hgetall(keys.succeeded_bucket(int(bucket)))
            contents: list[dict[bytes, bytes]] = await pipeline.execute()
        for content in contents:
            for job_id, packed in sorted(((k.decode(), v) for k, v in content.items()), reverse=True):
                place = (entry_score(job_id), job_id)
                if below is not None and place >= below:
                    continue
                if not _within(place[0], since_ms, until_ms):
                    continue
                if above is not None and place < above:
                    return Page(entries, True, above, examined)
                examined += 1
                last = place
                if wanted and not all(text in packed.lower() for text in wanted):
                    continue
                fields = _fields_or_reason(packed, job_id)
                if keep(fields):
                    entries.append(Entry(place[0], job_id, decode_record(fields, parsed_json=True)))
                    if len(entries) == limit:
                        return Page(entries, True, last, examined)
            if examined >= budget:
                return Page(entries, True, last, examined)
        skip += len(buckets)


def packed_texts(*values: str | None) -> list[str]:
    """What a packed record holding these values as strings must contain (lowercased), as
    `page`'s must_contain: each value's longest run of ASCII characters that JSON writes as they
    are (cjson escapes quotes, backslashes, slashes and control characters; the packed form is
    lowercased byte by byte, ASCII only); values that may be anywhere in a field (an error text)
    and whole fields (a queue, a job name) alike."""
    texts = []
    for value in values:
        if value:
            plain = (c if " " <= c < "\x7f" and c not in '"\\/' else "\0" for c in value.lower())
            runs = "".join(plain).split("\0")
            longest = max(runs, key=len)
            if longest:
                texts.append(longest)
    return texts


def _within(score: int, since_ms: int | None, until_ms: int | None) -> bool:
    ms = score // 1000
    return (since_ms is None or ms >= since_ms) and (until_ms is None or ms <= until_ms)


def _bucket_of_score(score: int) -> int:
    return score // 1000 // BUCKET_MS


def packed_or_hash(raw_hash: dict[Any, Any], packed: bytes | None, job_id: str) -> dict[str, Any] | None:
    """A record read both ways at once (its hash and its bucket's field): the hash while the job
    is alive or not succeeded, else the packed record; None if neither exists."""
    if raw_hash:
        return decode_record(raw_hash)
    if packed is not None:
        return unpack(packed, job_id)
    return None


Place = tuple[int, str]


def merge(
    streams: Sequence[tuple[Sequence[tuple[Place, Any]], Place | None]], limit: int
) -> tuple[list[Any], Place | None]:
    """One page, newest first, from listings read apart (an index and the packed records): each
    gives its items with their places and its frontier, the place of the last entry it examined
    (None when it reached its end). What lies below the frontier of a listing that stopped early
    is left for the next page, so nothing is passed over. Returns the items and the next cursor
    (None at the end)."""
    frontiers = [frontier for _, frontier in streams if frontier is not None]
    floor = max(frontiers) if frontiers else None
    items = sorted(
        (item for found, _ in streams for item in found if floor is None or item[0] >= floor),
        key=lambda item: item[0],
        reverse=True,
    )
    if len(items) > limit:
        return [item for _, item in items[:limit]], items[limit - 1][0]
    return [item for _, item in items], floor
