"""Redis clients built from the settings, and the one place a Redis error becomes BrokerUnavailable."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import redis
import redis.asyncio

from app.connection.commands import Command, run_commands
from app.errors import BrokerUnavailable
from app.settings import Settings, redact_url

#: What a Redis that is down, restarting or unreachable raises.
REDIS_DOWN_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError, OSError)


def make_client(settings: Settings, **overrides: Any) -> redis.Redis:
    """A sync client whose timeouts (set in the URL by Settings) make a dead Redis fail fast."""
    return redis.Redis.from_url(settings.redis_url, **overrides)


def make_async_client(settings: Settings, **overrides: Any) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(settings.redis_url, **overrides)


def describe(settings: Settings) -> str:
    """Where Redis is, safe to print."""
    return redact_url(settings.redis_url.split("?")[0])


def unavailable(error: BaseException) -> BrokerUnavailable:
    """`error` (a Redis that did not answer) as our BrokerUnavailable."""
    translated = BrokerUnavailable(f"Redis is unavailable ({type(error).__name__}: {error})")
    translated.__cause__ = error
    return translated


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Redis errors of a dead or unreachable Redis, raised inside, come out as BrokerUnavailable."""
    try:
        yield
    except REDIS_DOWN_ERRORS as error:
        raise unavailable(error) from error


def execute(client: redis.Redis, commands: Sequence[Command], *, transaction: bool = True) -> list[Any]:
    """Run commands in one pipelined round trip; a dead Redis raises BrokerUnavailable."""
    with translated(), client.pipeline(transaction=transaction) as pipeline:
        run_commands(pipeline, commands)
        return pipeline.execute()
