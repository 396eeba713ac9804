"""The service's own endpoints: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio

import redis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.context import api_of
from app.api.errors import refused_credentials
from app.connection.clients import REDIS_DOWN_ERRORS


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    api = api_of(request)
    # Every Redis that holds a keyspace (on a Redis Cluster, each master that serves a queue).
    keyspaces = [*api.keys.keyspaces(api.registry.queues()), api.keys.root_keys()]
    clients = list({id(client): client for client in map(api.shards.client, keyspaces)}.values())
    try:
        async with asyncio.timeout(2):
            await asyncio.gather(*(client.ping() for client in clients))
    except (*REDIS_DOWN_ERRORS, TimeoutError, redis.RedisError) as error:
        if refused_credentials(error):
            return JSONResponse({"error": "Redis refused the credentials in REDIS_URL: not ready"}, status_code=503)
        return JSONResponse({"error": "Redis does not answer: not ready"}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    output = await run_in_threadpool(generate_latest, api_of(request).metrics_registry)
    return Response(output, media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return JSONResponse(api_of(request).openapi)
