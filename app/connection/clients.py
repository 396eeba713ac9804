"""Redis clients built from the settings, and the one place a Redis error becomes BrokerUnavailable."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.connection
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.connection
import redis.retry
import redis.sentinel
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig

from app.connection.commands import Command, run_commands
from app.connection.shards import AsyncShards, Shards
from app.errors import BrokerUnavailable, SettingsError
from app.keys import Keys
from app.settings import REDIS_CONNECT_TIMEOUT_S, Settings, redact_url

#: What a Redis that is down, restarting or unreachable raises; and a write that reached a master
#: demoted to a replica (a failover under way, or behind a DNS name that moved): refused before
#: anything ran (a script on a replica stops at its first write), so it is an outage to wait out,
#: and safe to send again. With sentinels, redis-py itself turns it into a ConnectionError after
#: closing the connection, so that the next one asks the sentinels for the new master.
REDIS_DOWN_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.ReadOnlyError,
    ConnectionError,
    TimeoutError,
    OSError,
)


def make_client(
    settings: Settings, *, retry_once: bool = False, url: str | None = None, **overrides: Any
) -> redis.Redis:
    """A sync client whose timeouts (set in the URL by Settings) make a dead Redis fail fast, and
    whose pool replaces a connection Redis closed (a restart) before handing it out.
    `retry_once`: for a client that only reads (or writes idempotently), a command failing on a
    connection that turns out dead is sent once more on a fresh one. `url`: another node of a Redis
    Cluster than REDIS_URL's (app/connection/shards.py)."""
    retry = redis.retry.Retry(NoBackoff(), 1, supported_errors=RESEND_ERRORS) if retry_once else None
    options = {**_pool_options(retry), **overrides}
    if settings.redis_sentinels:
        sentinel = redis.sentinel.Sentinel(settings.redis_sentinels, sentinel_kwargs=_sentinel_options(settings))
        url_options = _url_options(redis.connection.parse_url(settings.redis_url))
        return sentinel.master_for(
            settings.redis_sentinel_master, redis_class=_SentinelMaster, **url_options, **options
        )
    return redis.Redis.from_url(url or settings.redis_url, **options)


def make_async_client(settings: Settings, *, url: str | None = None, **overrides: Any) -> redis.asyncio.Redis:
    """The API's client, pooled as `make_client`'s. Commands through it are reads, idempotent writes
    (an enqueue under an Idempotency-Key) or WATCHed transactions (redis-py never sends those twice):
    a command failing on a connection that turns out dead is sent once more on a fresh one. Writes
    that must run exactly once go through `run_atomically_async` (app/connection/atomic.py)."""
    retry = redis.asyncio.retry.Retry(NoBackoff(), 1, supported_errors=RESEND_ERRORS)
    options = {**_pool_options(retry), **overrides}
    if settings.redis_sentinels:
        sentinel = redis.asyncio.sentinel.Sentinel(
            settings.redis_sentinels, sentinel_kwargs=_sentinel_options(settings)
        )
        url_options = _url_options(redis.asyncio.connection.parse_url(settings.redis_url))
        return sentinel.master_for(
            settings.redis_sentinel_master, redis_class=_AsyncSentinelMaster, **url_options, **options
        )
    return redis.asyncio.Redis.from_url(url or settings.redis_url, **options)


def make_shards(settings: Settings, keys: Keys, **overrides: Any) -> Shards:
    """The sync clients of every keyspace (one Redis, or each node of a Redis Cluster)."""
    return Shards(settings, keys, lambda url: make_client(settings, url=url, **overrides))


def make_async_shards(settings: Settings, keys: Keys, **overrides: Any) -> AsyncShards:
    """`make_shards` for the API's asyncio clients."""
    return AsyncShards(settings, keys, lambda url: make_async_client(settings, url=url, **overrides))


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


class _SentinelMaster(redis.Redis):
    """A client of the master the sentinels name; closing it closes its connections to them too."""

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.connection_pool.sentinel_manager.close()  # type: ignore[attr-defined]


class _AsyncSentinelMaster(redis.asyncio.Redis):
    """`_SentinelMaster` for the asyncio client."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            await self.connection_pool.sentinel_manager.aclose()  # type: ignore[attr-defined]


def _url_options(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """REDIS_URL's options for connections to the master the sentinels name: its database,
    credentials, TLS and timeouts; not its host and port (the sentinels give those)."""
    options = {key: value for key, value in parsed.items() if key not in ("host", "port", "connection_class")}
    if parsed.get("connection_class") in (redis.connection.SSLConnection, redis.asyncio.connection.SSLConnection):
        options["ssl"] = True  # the sentinel pool picks its own TLS connection class
    return options


def _sentinel_options(settings: Settings) -> dict[str, Any]:
    """Connections to the sentinels: they fail as fast as those to Redis (a dead sentinel is
    skipped for the next), with the sentinels' own password."""
    parsed = redis.connection.parse_url(settings.redis_url)
    options: dict[str, Any] = {
        "socket_connect_timeout": parsed.get("socket_connect_timeout", REDIS_CONNECT_TIMEOUT_S),
        "socket_timeout": parsed.get("socket_timeout", REDIS_CONNECT_TIMEOUT_S),
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
    }
    if settings.redis_sentinel_password:
        options["password"] = settings.redis_sentinel_password
    return options


def describe(settings: Settings) -> str:
    """Where Redis is, safe to print."""
    if settings.redis_sentinels:
        sentinels = ",".join(f"{host}:{port}" for host, port in settings.redis_sentinels)
        db = redis.connection.parse_url(settings.redis_url).get("db", 0)
        return f"the master {settings.redis_sentinel_master!r} of sentinels {sentinels} (db {db})"
    return redact_url(settings.redis_url.split("?")[0])


#: What every component says when its Redis is a node of a Redis Cluster and REDIS_CLUSTER is not set.
CLUSTER_REFUSED = (
    "Redis at {where} is a node of a Redis Cluster (cluster_enabled:1), but REDIS_CLUSTER is not set: set "
    "REDIS_CLUSTER=true (every queue's keys then carry its hash tag; README: Redis Cluster), or point "
    "REDIS_URL at a standalone Redis."
)
#: ... and when REDIS_CLUSTER is set but its Redis is not a cluster node.
NOT_A_CLUSTER = (
    "REDIS_CLUSTER is set, but Redis at {where} is not a node of a Redis Cluster (cluster_enabled:0): point "
    "REDIS_URL at a node of the cluster, or leave REDIS_CLUSTER out for a standalone Redis."
)


def _check_mode(info: Mapping[str, Any], settings: Settings) -> None:
    enabled = bool(info.get("cluster_enabled"))
    if enabled and not settings.redis_cluster:
        raise SettingsError(CLUSTER_REFUSED.format(where=describe(settings)))
    if settings.redis_cluster and not enabled:
        raise SettingsError(NOT_A_CLUSTER.format(where=describe(settings)))


def check_cluster_mode(client: redis.Redis, settings: Settings) -> None:
    """SettingsError if Redis answers as a node of a Redis Cluster without REDIS_CLUSTER, or as a
    standalone Redis with it (the keys' layout differs). A Redis that does not answer (or refuses
    INFO) passes: an outage at start is waited out like any other."""
    try:
        info = client.info("cluster")
    except (*REDIS_DOWN_ERRORS, redis.RedisError):
        return
    _check_mode(info, settings)


async def check_cluster_mode_async(client: redis.asyncio.Redis, settings: Settings) -> None:
    """`check_cluster_mode` for the API's client."""
    try:
        info = await client.info("cluster")
    except (*REDIS_DOWN_ERRORS, redis.RedisError):
        return
    _check_mode(info, settings)


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
