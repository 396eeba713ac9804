"""Redis clients built from the settings, and the one place a Redis error becomes BrokerUnavailable."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig

from app.connection.commands import Command, run_commands
from app.errors import BrokerUnavailable
from app.settings import Settings, redact_url

#: What a Redis that is down, restarting or unreachable raises.
REDIS_DOWN_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError, OSError)


def make_client(settings: Settings, *, retry_once: bool = False, **overrides: Any) -> redis.Redis:
    """A sync client whose timeouts (set in the URL by Settings) make a dead Redis fail fast, and
    whose pool replaces a connection Redis closed (a restart) before handing it out.
    `retry_once`: for a client that only reads (or writes idempotently), a command failing on a
    connection that turns out dead is sent once more on a fresh one."""
    retry = redis.retry.Retry(NoBackoff(), 1, supported_errors=RESEND_ERRORS) if retry_once else None
    return redis.Redis.from_url(settings.redis_url, **{**_pool_options(retry), **overrides})


def make_async_client(settings: Settings, **overrides: Any) -> redis.asyncio.Redis:
    """The API's client, pooled as `make_client`'s. Commands through it are reads, idempotent writes
    (an enqueue under an Idempotency-Key) or WATCHed transactions (redis-py never sends those twice):
    a command failing on a connection that turns out dead is sent once more on a fresh one. Writes
    that must run exactly once go through `run_atomically_async` (app/connection/atomic.py)."""
    retry = redis.asyncio.retry.Retry(NoBackoff(), 1, supported_errors=RESEND_ERRORS)
    return redis.asyncio.Redis.from_url(settings.redis_url, **{**_pool_options(retry), **overrides})


#: What a connection that turns out dead raises (Redis closed it, or it was reset): worth one
#: more try on a fresh connection. Not a timeout: a Redis that did not answer in time is not
#: asked again within the same deadline.
RESEND_ERRORS = (redis.ConnectionError,)


def _pool_options(retry: Any) -> dict[str, Any]:
    # redis-py 8.1 with RESP3 (its default) turns maintenance notifications on ("auto"), and then
    # its asyncio pool no longer checks that a pooled connection is still open before handing it out
    # (redis-py #4252): after a Redis restart, every connection opened before it failed its next
    # command with "Connection closed by server." (503s long after Redis was back). Those
    # notifications are for managed clusters that move nodes, not for our Redis: off, the pool
    # replaces a closed connection at no cost (a look at its buffer), and a new connection skips
    # the CLIENT MAINT_NOTIFICATIONS round trip.
    options: dict[str, Any] = {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}
    if retry is not None:
        options["retry"] = retry
    return options


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
