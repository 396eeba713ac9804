"""Redis clients built from the settings, and the one place Redis errors become BrokerUnavailable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio

from app.errors import BrokerUnavailable
from app.outcomes import Command, run_commands
from app.settings import Settings, redact_url

REDIS_DOWN_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError, OSError)

# Enqueue under an idempotency key: the SET NX and the enqueue commands run in one atomic
# script, so two racing requests cannot both enqueue, and a failed enqueue leaves no key.
# ARGV: idempotency key, job id, ttl seconds, then each command as <argc> <arg>...
ENQUEUE_IF_ABSENT = """
local existing = redis.call('GET', ARGV[1])
if existing then return existing end
redis.call('SET', ARGV[1], ARGV[2], 'EX', tonumber(ARGV[3]))
local i = 4
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + argc + 1
end
return false
"""


def make_client(settings: Settings, **overrides: Any) -> redis.Redis:
    """A sync client whose timeouts (set in the URL by Settings) make a dead Redis fail fast."""
    return redis.Redis.from_url(settings.redis_url, **overrides)


def make_async_client(settings: Settings, **overrides: Any) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(settings.redis_url, **overrides)


def describe(settings: Settings) -> str:
    return redact_url(settings.redis_url.split("?")[0])


def unavailable(settings: Settings, error: BaseException) -> BrokerUnavailable:
    return BrokerUnavailable(f"Redis at {describe(settings)} is unavailable ({type(error).__name__}: {error})")


def execute(client: redis.Redis, commands: Sequence[Command], *, transaction: bool = True) -> list[Any]:
    """Run commands in one pipelined round trip; a dead Redis raises BrokerUnavailable."""
    try:
        with client.pipeline(transaction=transaction) as pipeline:
            run_commands(pipeline, commands)
            return pipeline.execute()
    except REDIS_DOWN_ERRORS as error:
        raise BrokerUnavailable(f"Redis is unavailable ({type(error).__name__}: {error})") from error


def flatten_for_script(commands: Sequence[Command]) -> list[Any]:
    args: list[Any] = []
    for command in commands:
        args.append(len(command))
        args.extend(command)
    return args
