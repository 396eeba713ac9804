"""What a Redis holds, for tests that compare it with what it should hold, and a way to write
commands into it as one MULTI/EXEC."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from app.connection.commands import Command

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


def run_multi(client: redis.Redis, commands: Sequence[Command]) -> list[Any]:
    """Run commands in one MULTI/EXEC; their replies."""
    with client.pipeline(transaction=True) as pipeline:
        for command in commands:
            pipeline.execute_command(*command)
        return pipeline.execute()


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value
