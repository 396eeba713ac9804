"""The HTTP API (Starlette): where jobs are accepted, and where their outcomes are read and acted on.

Serve it with `uvicorn app.http:app --port 3002`. `create_app(settings)` builds the app;
`app` builds it from the environment when the server starts. `ROUTES` lists the endpoints (in
app/api/); app/api/operations.py says what /openapi.json documents of each.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from app.api import cancel, enqueue, jobs, queues, schedules, system
from app.api.context import Api
from app.api.errors import ERROR_HANDLERS, REDIS_DEADLINE_S, error_body
from app.api.http_metrics import HttpMetrics, HttpMetricsMiddleware
from app.api.openapi import document
from app.api.operations import OPERATIONS
from app.api.queue_metrics import QueueCollector
from app.broker.enqueue import Enqueuer
from app.connection.api_writes import WriteRouter
from app.connection.clients import check_cluster_mode_async, describe, make_async_shards, make_shards
from app.errors import SettingsError, shown
from app.jobs import JobRegistry, load_job_types
from app.keys import Keys
from app.logs import configure_logging
from app.outcomes.log import OutcomeLog
from app.outcomes.store import JobStore
from app.schedules import load_schedules
from app.settings import Settings
from app.ui.routes import ROUTES as CONSOLE_ROUTES

logger = logging.getLogger(__name__)

ROUTES = [
    Route("/enqueue", enqueue.enqueue, methods=["POST"]),
    Route("/enqueue/batch", enqueue.enqueue_batch, methods=["POST"]),
    Route("/jobs", jobs.list_jobs, methods=["GET"]),
    Route("/jobs", jobs.delete_jobs, methods=["DELETE"]),
    Route("/jobs/retry", jobs.retry_jobs, methods=["POST"]),
    Route("/jobs/{job_id}", jobs.get_job, methods=["GET"]),
    Route("/jobs/{job_id}", jobs.delete_job, methods=["DELETE"]),
    Route("/jobs/{job_id}/retry", jobs.retry_job, methods=["POST"]),
    Route("/jobs/{job_id}/cancel", cancel.cancel_job, methods=["POST"]),
    Route("/queues", queues.list_queues, methods=["GET"]),
    Route("/queues/{name}", queues.get_queue, methods=["GET"]),
    Route("/queues/{name}/pause", queues.pause_queue, methods=["POST"]),
    Route("/queues/{name}/resume", queues.resume_queue, methods=["POST"]),
    Route("/schedules", schedules.list_schedules, methods=["GET"]),
    Route("/healthz", system.healthz, methods=["GET"]),
    Route("/readyz", system.readyz, methods=["GET"]),
    Route("/metrics", system.metrics, methods=["GET"]),
    Route("/openapi.json", system.openapi, methods=["GET"]),
]


def create_app(settings: Settings, *, job_registry: JobRegistry | None = None) -> Starlette:
    """The API for these settings; Redis connections open and close with the app's lifespan.
    `job_registry`: the declared job types (default: those of app/actors/)."""
    settings.require_api_key()
    registry = load_job_types(settings.job_modules) if job_registry is None else job_registry
    loaded_schedules = load_schedules(settings, registry)
    keys = Keys.root(settings.namespace, cluster=settings.redis_cluster)
    log = OutcomeLog.for_settings(keys, settings)
    enqueuer = Enqueuer(registry=registry, keys=keys, log=log, settings=settings)
    # One client per Redis: the one (or the Sentinel master), or each master of a Redis Cluster.
    shards = make_async_shards(settings, keys)
    client = shards.client(keys)  # on a cluster, until the slot map is read: the REDIS_URL node's
    metrics_registry = CollectorRegistry()
    sync_shards = make_shards(settings, keys, retry_once=True)  # it only reads
    metrics_registry.register(
        QueueCollector(
            client=sync_shards.client(keys),
            keys=keys,
            jobs=[(t.name, t.queue) for t in registry],
            heartbeat_timeout_ms=settings.heartbeat_timeout_ms,
            limited=[(t.name, t.queue) for t in registry.limited()],
            shards=sync_shards,
        )
    )
    api = Api(
        settings=settings,
        registry=registry,
        keys=keys,
        enqueuer=enqueuer,
        client=client,
        batcher=WriteRouter(
            shards,
            timeout_s=REDIS_DEADLINE_S,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
        ),
        store=JobStore(client=client, keys=keys, log=log, enqueuer=enqueuer, shards=shards, queues=registry.queues()),
        metrics_registry=metrics_registry,
        http_metrics=HttpMetrics(metrics_registry),
        openapi=document(ROUTES, OPERATIONS, registry, max_batch_jobs=settings.max_batch_jobs),
        shards=shards,
        schedules=loaded_schedules,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await check_cluster_mode_async(client, settings)
            await shards.start()  # on a cluster: the slot map read, and kept fresh
            # The root keys' node, once known (on one Redis: the same client).
            api.client = api.store.client = shards.client(keys)
            logger.info("API ready; Redis at %s", describe(settings))
            yield
        finally:
            await shards.aclose()
            sync_shards.close()

    app = Starlette(
        routes=[*ROUTES, *CONSOLE_ROUTES],
        lifespan=lifespan,
        exception_handlers={**ERROR_HANDLERS, 404: _not_found_route, 405: _method_not_allowed},
    )
    app.state.api = api
    app.add_middleware(HttpMetricsMiddleware)
    return app


async def _not_found_route(request: Request, exc: Exception) -> Response:
    return error_body(404, f"no such endpoint {shown(request.method)} {shown(request.url.path)}: see /openapi.json")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    # Several routes can share a path template (GET and DELETE /jobs): Allow lists the methods of all of them.
    routes = [*ROUTES, *CONSOLE_ROUTES]
    template = next(r.path for r in routes if r.matches(request.scope)[0] != Match.NONE)
    allowed = sorted({m for r in routes if r.path == template for m in r.methods or ()})
    response = error_body(
        405,
        f"{shown(request.method)} is not allowed on {shown(request.url.path)}: use {', '.join(allowed)} "
        "(see /openapi.json)",
    )
    response.headers["Allow"] = ", ".join(allowed)
    return response


#: Young-generation threshold of the cyclic garbage collector in the API process (Python: 700).
GC_YOUNG_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """For a server process, once it is built. What exists then (modules, the app, its clients)
    lives as long as the process: frozen, the collector's full passes no longer walk it. And a
    request allocates a few hundred short-lived containers (coroutines, futures, dicts) that
    reference counting frees: collecting them every 700 allocations was wasted work. Measured
    with wrk on POST /enqueue: about 95 -> 75 µs of CPU per request (each alone gave part of it)."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


class _AppFromEnvironment:
    """Builds the app from the environment when the server starts (not at import), and stops the
    server with a clear message when a setting is missing or wrong."""

    def __init__(self) -> None:
        self._app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            try:
                settings = Settings.from_env()
                configure_logging(settings)
                self._app = create_app(settings)
            except SettingsError as error:
                if scope["type"] == "lifespan":
                    await receive()
                    await send({"type": "lifespan.startup.failed", "message": f"Cannot start the API: {error}"})
                    return
                raise
            tune_garbage_collector()
        await self._app(scope, receive, send)


app = _AppFromEnvironment()
