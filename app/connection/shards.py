"""Which Redis holds a keyspace: the one Redis (or Sentinel master) of a deployment, or, on a Redis
Cluster, the master node that serves the slot of the keyspace's hash tag.

On a cluster each queue's keys carry its hash tag (app/keys.py), so every write of a queue goes,
whole, to one node: its Lua scripts, transactions and pipelined batches run there unchanged, on a
plain client of that node, as they do on one Redis. Each node has one pooled client; the slot map
(CLUSTER SLOTS) is read at start and again every REFRESH_S seconds by a background thread (or
task, for the API), so that a failover (a replica promoted) or a slot moved to another node is
followed within seconds: until then the writes of that queue fail as an outage does, and are
retried as one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
from redis.crc import key_slot

from app.keys import Keys
from app.settings import Settings

logger = logging.getLogger(__name__)

#: How often the slot map is read again (s).
REFRESH_S = 2.0

Client = TypeVar("Client", redis.Redis, redis.asyncio.Redis)
#: (first slot, last slot, host, port) of each range a master serves.
SlotRanges = list[tuple[int, int, str, int]]


@dataclass(frozen=True)
class Shard(Generic[Client]):
    """A keyspace and the client of the Redis that holds it."""

    keys: Keys
    client: Client


def node_url(redis_url: str, host: str, port: int) -> str:
    """REDIS_URL pointed at another node (its credentials, database, TLS and options kept)."""
    parts = urlsplit(redis_url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def slot_ranges(reply: Sequence[Any]) -> SlotRanges:
    """CLUSTER SLOTS' reply as the ranges of the masters (each entry's first node)."""
    ranges: SlotRanges = []
    for entry in reply:
        start, end, master = entry[0], entry[1], entry[2]
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        ranges.append((int(start), int(end), host, int(master[1])))
    return sorted(ranges)


def keyspace_slot(keys: Keys) -> int:
    return key_slot(keys.hash_tag().encode())


class _SlotMap(Generic[Client]):
    """Slot -> node address, and one client per node address."""

    def __init__(self, make: Callable[[str], Client], seed_url: str) -> None:
        self.make: Callable[[str], Client] = make
        self.seed_url = seed_url
        self.ranges: SlotRanges = []
        self.clients: dict[tuple[str, int], Client] = {}
        self.lock = threading.Lock()

    def address(self, slot: int) -> tuple[str, int] | None:
        for start, end, host, port in self.ranges:
            if start <= slot <= end:
                return host, port
        return None

    def client(self, slot: int) -> Client:
        address = self.address(slot)
        if address is None:
            # Not yet read (or the cluster is down): the seed node answers with MOVED or an
            # outage, which the caller retries like any other.
            address = ("", 0)
        with self.lock:
            client = self.clients.get(address)
            if client is None:
                url = self.seed_url if address == ("", 0) else node_url(self.seed_url, *address)
                client = self.clients[address] = self.make(url)
            return client

    def replace(self, ranges: SlotRanges) -> None:
        if ranges and ranges != self.ranges:
            if self.ranges:
                logger.info("Redis Cluster slot map changed: %s", _describe(ranges))
            self.ranges = ranges

    def candidates(self) -> list[Client]:
        """Clients to ask for the slot map: every known node's, then the seed's."""
        with self.lock:
            known = list(self.clients.values())
        return known or [self.client(-1)]


def _describe(ranges: SlotRanges) -> str:
    return ", ".join(f"{start}-{end} on {host}:{port}" for start, end, host, port in ranges)


class _Routing(Generic[Client]):
    """What the sync and asyncio shards share: which client holds a keyspace."""

    def __init__(self, settings: Settings, keys: Keys, make: Callable[[str], Client]) -> None:
        self.keys = keys
        self.cluster = settings.redis_cluster
        self._map: _SlotMap[Client] = _SlotMap(make, settings.redis_url)
        self._one: Client | None = None if self.cluster else make(settings.redis_url)

    def client(self, keys: Keys) -> Client:
        if self._one is not None:
            return self._one
        return self._map.client(keyspace_slot(keys))

    def for_queue(self, queue: str) -> Shard[Client]:
        keys = self.keys.for_queue(queue)
        return Shard(keys, self.client(keys))

    def for_job(self, job_id: str) -> Shard[Client]:
        keys = self.keys.for_job(job_id)
        return Shard(keys, self.client(keys))

    def of_queues(self, queues: Iterable[str]) -> list[Shard[Client]]:
        """A shard per distinct keyspace of these queues (the one, without a cluster)."""
        return [Shard(keys, self.client(keys)) for keys in self.keys.keyspaces(queues)]

    def _clients(self) -> list[Client]:
        return [self._one] if self._one is not None else list(self._map.clients.values())


class Shards(_Routing[redis.Redis]):
    """The sync clients of a deployment's keyspaces (workers, the scheduler, cleanup, the producer)."""

    def __init__(self, settings: Settings, keys: Keys, make: Callable[[str], redis.Redis]) -> None:
        super().__init__(settings, keys, make)
        self._stop = threading.Event()
        if self.cluster:
            self.refresh()
            threading.Thread(target=self._keep_fresh, name="cluster-slots", daemon=True).start()

    @classmethod
    def single(cls, client: redis.Redis, keys: Keys) -> Shards:
        """The shards of one Redis, on a client already made."""
        return cls(Settings(), keys, lambda _: client)

    def refresh(self) -> None:
        """Read the slot map again (from any node that answers)."""
        for client in self._map.candidates():
            with contextlib.suppress(redis.RedisError, OSError):
                self._map.replace(slot_ranges(client.execute_command("CLUSTER SLOTS")))
                return

    def _keep_fresh(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        for client in self._clients():
            with contextlib.suppress(Exception):
                client.close()


class AsyncShards(_Routing[redis.asyncio.Redis]):
    """`Shards` for the API's asyncio clients; `start` begins the refreshes (in the app's loop)."""

    def __init__(self, settings: Settings, keys: Keys, make: Callable[[str], redis.asyncio.Redis]) -> None:
        super().__init__(settings, keys, make)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def single(cls, client: redis.asyncio.Redis, keys: Keys) -> AsyncShards:
        """The shards of one Redis, on a client already made."""
        return cls(Settings(), keys, lambda _: client)

    async def refresh(self) -> None:
        for client in self._map.candidates():
            with contextlib.suppress(redis.RedisError, OSError):
                self._map.replace(slot_ranges(await client.execute_command("CLUSTER SLOTS")))
                return

    async def start(self) -> None:
        if self.cluster and self._task is None:
            await self.refresh()
            self._task = asyncio.create_task(self._keep_fresh())

    async def _keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            await self.refresh()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in self._clients():
            with contextlib.suppress(Exception):
                await client.aclose()
