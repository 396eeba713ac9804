"""What the endpoints share: the settings, the clients and the components built on them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio
from prometheus_client import CollectorRegistry
from starlette.requests import Request

from app.api.http_metrics import HttpMetrics
from app.broker.enqueue import Enqueuer
from app.connection.api_writes import WriteRouter
from app.connection.shards import AsyncShards
from app.jobs import JobRegistry
from app.keys import Keys
from app.outcomes.store import JobStore
from app.schedules import Schedule
from app.settings import Settings


@dataclass
class Api:
    """Everything an endpoint needs, built once by `create_app`."""

    settings: Settings
    registry: JobRegistry
    #: The root keys (on one Redis, every key; on a Redis Cluster, what belongs to no queue):
    #: `keys.for_queue(q)` and `keys.for_job(id)` give a queue's or a job's keyspace.
    keys: Keys
    enqueuer: Enqueuer
    #: The client of the root keys' Redis (on one Redis, the one). On a Redis Cluster, a queue's
    #: keys are on the node `shards` gives: `shards.for_queue(q)`, `shards.for_job(id)`.
    client: redis.asyncio.Redis
    #: The API's coalesced writes: `batcher.submit(commands, keys)`, one keyspace's commands a call.
    batcher: WriteRouter
    store: JobStore
    metrics_registry: CollectorRegistry
    http_metrics: HttpMetrics
    #: The OpenAPI document served at /openapi.json, built once.
    openapi: dict[str, Any]
    #: The clients of every keyspace (one Redis, or each master of a Redis Cluster).
    shards: AsyncShards
    #: The schedules of SCHEDULES_FILE (GET /schedules).
    schedules: tuple[Schedule, ...] = ()


def api_of(request: Request) -> Api:
    return request.app.state.api  # type: ignore[no-any-return]
