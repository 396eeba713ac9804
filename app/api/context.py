"""What the endpoints share: the settings, the clients and the components built on them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio
from prometheus_client import CollectorRegistry
from starlette.requests import Request

from app.api.http_metrics import HttpMetrics
from app.broker.enqueue import Enqueuer
from app.connection.api_writes import WriteBatcher
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
    keys: Keys
    enqueuer: Enqueuer
    client: redis.asyncio.Redis
    batcher: WriteBatcher
    store: JobStore
    metrics_registry: CollectorRegistry
    http_metrics: HttpMetrics
    #: The OpenAPI document served at /openapi.json, built once.
    openapi: dict[str, Any]
    #: The schedules of SCHEDULES_FILE (GET /schedules).
    schedules: tuple[Schedule, ...] = ()


def api_of(request: Request) -> Api:
    return request.app.state.api  # type: ignore[no-any-return]
