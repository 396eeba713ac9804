"""What a Redis holds, for tests that compare it with what it should hold, and a way to write
commands into it as one MULTI/EXEC."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis

from app.connection.commands import Command
from app.keys import Keys
from app.outcomes import packed
from app.outcomes.record import decode_record

#: A key as `dump` shows it: its type, its value and whether it expires.
Entry = tuple[str, Any, bool]


def dump(client: redis.Redis) -> dict[str, Entry]:
    """Every key's type, value (text; a sorted set as (member, score) pairs in Redis's order) and
    whether it expires."""
    readers = {
        "hash": lambda key: {_text(k): _text(v) for k, v in client.hgetall(key).items()},
        "list": lambda key: [_text(v) for v in client.lrange(key, 0, -1)],
        "zset": lambda key: [(_text(m), score) for m, score in client.zrange(key, 0, -1, withscores=True)],
        "set": lambda key: {_text(v) for v in client.smembers(key)},
        "string": lambda key: _text(client.get(key)),
    }
    out: dict[str, Entry] = {}
    for key in client.keys("*"):
        kind = _text(client.type(key))
        out[_text(key)] = (kind, readers[kind](key), client.ttl(key) > 0)
    return out


def record_fields(client: redis.Redis, keys: Keys, job_id: str) -> dict[str, str]:
    """A job's record as text fields, as HGETALL shows a hash: from its hash while it has one, else
    from its packed record (once it succeeded: app/outcomes/packed.py); {} if it has neither."""
    raw = client.hgetall(keys.job(job_id))
    if raw:
        return {_text(k): _text(v) for k, v in raw.items()}  # type: ignore[union-attr]
    value = client.hget(packed.bucket_key(keys, job_id), job_id)
    if value is None:
        return {}
    return {
        name: json.dumps(field, separators=(",", ":"), ensure_ascii=False)
        if packed.PACKED_KINDS.get(name) == "j"
        else str(field)
        for name, field in packed.unpack_fields(value, job_id).items()  # type: ignore[arg-type]
    }


def records_fields(
    client: redis.Redis, keys: Keys, job_ids: Sequence[str], names: Sequence[str]
) -> list[tuple[str | None, ...]]:
    """These fields (text, None where absent) of many jobs' records, hash or packed, in one round
    trip: what a pipeline of HMGETs showed before succeeded records were packed."""
    with client.pipeline(transaction=False) as pipeline:
        for job_id in job_ids:
            pipeline.hmget(keys.job(job_id), *names)
            pipeline.hget(packed.bucket_key(keys, job_id), job_id)
        replies = pipeline.execute()
    rows: list[tuple[str | None, ...]] = []
    for job_id, values, value in zip(job_ids, replies[::2], replies[1::2], strict=True):
        if any(v is not None for v in values) or value is None:
            rows.append(tuple(_text(v) for v in values))
        else:
            fields = packed.unpack_fields(value, job_id)
            rows.append(tuple(None if fields.get(name) is None else str(fields[name]) for name in names))
    return rows


def packed_of(client: redis.Redis, keys: Keys, job_name: str) -> list[str]:
    """The ids of a job type's packed (succeeded) records, read from every bucket."""
    found = []
    for bucket in client.zrange(keys.succeeded_buckets(), 0, -1):
        for job_id, value in client.hgetall(keys.succeeded_bucket(int(bucket))).items():  # type: ignore[union-attr]
            if packed.unpack_fields(value, _text(job_id)).get("jobName") == job_name:
                found.append(_text(job_id))
    return found


def succeeded_count(client: redis.Redis, keys: Keys) -> int:
    """How many succeeded records there are (packed ones are counted in the bucket sizes)."""
    return int(client.hget(keys.succeeded_sizes(), packed.TOTAL_FIELD) or 0)


def read_record(client: redis.Redis, keys: Keys, job_id: str) -> dict[str, Any]:
    """A job's record decoded as the API shows it (decode_record), hash or packed alike."""
    return decode_record(record_fields(client, keys, job_id))


def run_multi(client: redis.Redis, commands: Sequence[Command]) -> list[Any]:
    """Run commands in one MULTI/EXEC; their replies."""
    with client.pipeline(transaction=True) as pipeline:
        for command in commands:
            pipeline.execute_command(*command)
        return pipeline.execute()


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value
