"""The two reference HTTP apps that POST /enqueue is compared with, served by uvicorn like ours.

- `trivial`: answers a constant JSON body: the ceiling of one uvicorn worker on this machine.
- `naive`: the usual first attempt: a Starlette endpoint calling `actor.send()` on a stock
  RedisBroker (one blocking Redis round trip per request, no validation, no outcome record).
"""

from __future__ import annotations

from typing import Any

import dramatiq
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench import plain  # the stock broker

NAIVE_QUEUE = "naive"


@dramatiq.actor(actor_name="emailJob", queue_name=NAIVE_QUEUE, broker=plain.broker)
def email_job(data: dict[str, Any]) -> None:
    """Never run: the benchmark only enqueues."""


ACTORS = {"emailJob": email_job}


async def trivial_endpoint(request: Request) -> Response:
    return JSONResponse({"message": "ok"}, status_code=202)


async def naive_endpoint(request: Request) -> Response:
    body = await request.json()
    message = ACTORS[body["jobName"]].send(body["data"])
    return JSONResponse({"message": "Job added", "jobId": message.message_id}, status_code=202)


trivial = Starlette(routes=[Route("/enqueue", trivial_endpoint, methods=["POST"])])
naive = Starlette(routes=[Route("/enqueue", naive_endpoint, methods=["POST"])])
