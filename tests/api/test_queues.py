"""GET /queues, GET /queues/{name}, pausing and resuming a queue, and the per-queue metrics: the API
in process on a private redis-server, its figures checked against what is in Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from app.api.errors import RETRY_AFTER_S
from app.api.queue_state import QueueReader
from app.broker.enqueue import RUNNABLE_AT, WAKEUP_TOKENS
from app.jobs import load_job_types
from app.outcomes.record import now_ms
from app.settings import Settings
from tests.support.accepted import KEYS
from tests.support.inprocess import api_client
from tests.support.services import RedisServer

pytestmark = pytest.mark.anyio

API_KEY = "queues-api-key-0123456789"
READONLY_KEY = "queues-readonly-key-9876543210"
DECLARED = load_job_types().queues()
QUEUE = "default"
ROUTES = [("GET", "/queues"), ("GET", "/queues/default"), ("POST", "/queues/default/pause"),
          ("POST", "/queues/default/resume")]  # fmt: skip
WRITES = [route for route in ROUTES if route[0] == "POST"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings_for(redis_url: str) -> Settings:
    return Settings.from_env(
        {"REDIS_URL": redis_url, "API_KEY": API_KEY, "API_READONLY_KEY": READONLY_KEY, "HEARTBEAT_TIMEOUT_MS": "5000"}
    )


@pytest.fixture
async def api(redis_server: RedisServer) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings_for(redis_server.url), **{"x-api-key": API_KEY}) as client:
        yield client


def put_message(client: redis.Redis, list_key: str, redis_id: str, runnable_at: int) -> None:
    """A ready message on one of the queue's lists, its body in the queue's messages."""
    options = {RUNNABLE_AT: runnable_at, "redis_message_id": redis_id}
    body = {"queue_name": QUEUE, "actor_name": "emailJob", "args": [], "kwargs": {}, "message_id": redis_id,
            "message_timestamp": runnable_at, "options": options}  # fmt: skip
    client.hset(KEYS.queue_messages(QUEUE), redis_id, json.dumps(body))
    client.rpush(list_key, redis_id)


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_every_declared_queue_is_listed_with_its_figures(
    api: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    response = await api.get("/queues")
    assert response.status_code == 200, response.text
    empty = {"ready": 0, "readyByPriority": {"high": 0, "normal": 0, "low": 0}, "delayed": 0, "waiting": 0,
             "running": 0, "failed": 0, "oldestAgeSeconds": 0.0, "paused": False, "pausedAt": None}  # fmt: skip
    assert response.json() == {"queues": [{"name": name, **empty} for name in DECLARED]}

    # Two jobs now and one delayed, through the API.
    for delay in (None, None, 60_000):
        enqueued = await api.post("/enqueue", json={"jobName": "emailJob", "data": {"email": "u@example.com"},
                                                    "delayMs": delay})  # fmt: skip
        assert enqueued.status_code == 202, enqueued.text
    # A job on each other level, the low one ready for a minute (the oldest of all levels).
    now = now_ms()
    put_message(redis_client, KEYS.priority_queue(QUEUE, "high"), "h1", now - 1_000)
    put_message(redis_client, KEYS.priority_queue(QUEUE, "low"), "l1", now - 60_000)
    put_message(redis_client, KEYS.priority_queue(QUEUE, "low"), "l2", now)
    # Two jobs over their rate limit, one dead letter.
    redis_client.zadd(KEYS.throttled(QUEUE), {"normal|t1": now + 1000, "low|t2": now + 2000})
    redis_client.zadd(KEYS.dead_letters(QUEUE), {"d1": now})
    # A live worker holding 2 jobs, a dead one (silent for longer than the heartbeat timeout) and
    # a stopped one: only the live one's are running.
    redis_client.zadd(KEYS.heartbeats(), {"live": now, "dead": now - 60_000, "stopped": 0})
    redis_client.sadd(KEYS.acks("live", QUEUE), "r1", "r2")
    redis_client.sadd(KEYS.acks("dead", QUEUE), "r3")
    redis_client.sadd(KEYS.acks("stopped", QUEUE), "r4")

    response = await api.get(f"/queues/{QUEUE}")
    assert response.status_code == 200, response.text
    state = response.json()
    assert {key: value for key, value in state.items() if key != "oldestAgeSeconds"} == {
        "name": QUEUE, "ready": 5, "readyByPriority": {"high": 1, "normal": 2, "low": 2}, "delayed": 1,
        "waiting": 2, "running": 2, "failed": 1, "paused": False, "pausedAt": None,
    }  # fmt: skip
    assert 60 <= state["oldestAgeSeconds"] < 90
    assert (await api.get("/queues")).json()["queues"][DECLARED.index(QUEUE)] == {
        **state,
        "oldestAgeSeconds": pytest.approx(state["oldestAgeSeconds"], abs=5),
    }


def test_jobs_waiting_for_a_concurrency_slot_count_as_waiting(redis_client: redis.Redis) -> None:
    reader = QueueReader.for_jobs(
        KEYS, [("a", QUEUE), ("b", QUEUE), ("c", "other")], [("a", QUEUE), ("c", "other")], heartbeat_timeout_ms=1000
    )
    redis_client.rpush(KEYS.slot_waiting(QUEUE, "a"), "normal|1", "high|2")
    redis_client.rpush(KEYS.slot_waiting("other", "c"), "low|3")
    redis_client.zadd(KEYS.throttled("other"), {"normal|4": 1})
    now = now_ms()
    states = reader.parse(redis_client.execute_command(*reader.command(now)), now)
    assert [(state.name, state.waiting, state.ready) for state in states] == [(QUEUE, 2, 0), ("other", 2, 0)]


async def test_an_unknown_queue_is_404_naming_the_declared_ones(api: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/queues/nope"), ("POST", "/queues/nope/pause"), ("POST", "/queues/nope/resume"),
                         ("GET", "/queues/default.DQ"), ("POST", f"/queues/{'x' * 300}/pause")]:  # fmt: skip
        response = await api.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        message = response.json()["error"]
        assert f"the declared queues are {', '.join(DECLARED)}" in message, message
        assert len(message) < 250, "the name is quoted cut short"
    assert (await api.get("/queues")).json()["queues"][0]["paused"] is False


async def test_pause_keeps_the_first_pause_time_and_resume_wakes_the_consumers(
    api: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    before = now_ms()
    paused = await api.post(f"/queues/{QUEUE}/pause")
    assert paused.status_code == 200, paused.text
    state = paused.json()
    assert state["name"] == QUEUE and state["paused"] is True
    assert before <= state["pausedAt"] <= now_ms()
    assert int(redis_client.hget(KEYS.paused(), QUEUE) or 0) == state["pausedAt"]

    again = await api.post(f"/queues/{QUEUE}/pause")
    assert again.status_code == 200 and again.json()["pausedAt"] == state["pausedAt"]
    assert (await api.get(f"/queues/{QUEUE}")).json()["pausedAt"] == state["pausedAt"]

    resumed = await api.post(f"/queues/{QUEUE}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["paused"] is False and resumed.json()["pausedAt"] is None
    assert redis_client.hexists(KEYS.paused(), QUEUE) == 0
    # Enough wake-up tokens for every idle consumer, with an expiry.
    assert redis_client.llen(KEYS.wakeup(QUEUE)) == WAKEUP_TOKENS
    assert redis_client.ttl(KEYS.wakeup(QUEUE)) > 0

    # Resuming a queue that is not paused changes nothing but waking.
    again = await api.post(f"/queues/{QUEUE}/resume")
    assert again.status_code == 200 and again.json()["paused"] is False
    assert redis_client.llen(KEYS.wakeup(QUEUE)) == WAKEUP_TOKENS
    assert redis_client.hlen(KEYS.paused()) == 0


async def test_a_pause_outlives_the_api_that_made_it(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    settings = settings_for(redis_server.url)
    async with api_client(settings, **{"x-api-key": API_KEY}) as first:
        paused_at = (await first.post(f"/queues/{QUEUE}/pause")).json()["pausedAt"]
    async with api_client(settings, **{"x-api-key": API_KEY}) as restarted:
        state = (await restarted.get(f"/queues/{QUEUE}")).json()
        assert state["paused"] is True and state["pausedAt"] == paused_at
        assert (await restarted.post(f"/queues/{QUEUE}/resume")).json()["paused"] is False


async def test_the_metrics_show_each_queue_paused_and_its_depth_by_state(
    api: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    def paused(text: str) -> float:
        return metric_samples(text)[("taskqueue_queue_paused", frozenset({("queue", QUEUE)}))]

    assert paused((await api.get("/metrics")).text) == 0
    redis_client.rpush(KEYS.priority_queue(QUEUE, "high"), "h1")
    redis_client.rpush(KEYS.priority_queue(QUEUE, "low"), "l1", "l2")
    redis_client.rpush(KEYS.queue(QUEUE), "n1")
    redis_client.zadd(KEYS.throttled(QUEUE), {"normal|t1": 1})
    redis_client.zadd(KEYS.heartbeats(), {"live": now_ms()})
    redis_client.sadd(KEYS.acks("live", QUEUE), "r1", "r2", "r3")
    await api.post(f"/queues/{QUEUE}/pause")

    found = metric_samples((await api.get("/metrics")).text)
    assert found[("taskqueue_queue_paused", frozenset({("queue", QUEUE)}))] == 1
    depth = {
        dict(labels)["state"]: value
        for (name, labels), value in found.items()
        if name == "taskqueue_queue_depth" and dict(labels)["queue"] == QUEUE
    }
    assert depth == {"ready": 4, "delayed": 0, "waiting": 1, "running": 3, "failed": 0}
    assert found[("taskqueue_redis_up", frozenset())] == 1

    await api.post(f"/queues/{QUEUE}/resume")
    assert paused((await api.get("/metrics")).text) == 0


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_queue_route_needs_a_key_and_the_read_only_key_only_reads(
    api: httpx.AsyncClient, redis_client: redis.Redis, method: str, path: str
) -> None:
    for key in ("", "wrong", API_KEY[:-1], READONLY_KEY + "x"):
        response = await api.request(method, path, headers={"x-api-key": key})
        assert response.status_code == 401, (key, response.text)
        assert "x-api-key" in response.json()["error"]
    response = await api.request(method, path, headers={"x-api-key": READONLY_KEY})
    if (method, path) in WRITES:
        assert response.status_code == 403, response.text
        assert "read-only" in response.json()["error"]
    else:
        assert response.status_code == 200, response.text
    assert redis_client.hlen(KEYS.paused()) == 0, "a refused request paused nothing"
    # A refused request leaves no wake-up behind either.
    assert redis_client.exists(KEYS.wakeup(QUEUE)) == 0


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_queue_route_answers_503_when_redis_does_not(method: str, path: str) -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:1/0", "API_KEY": API_KEY})
    async with api_client(settings, **{"x-api-key": API_KEY}) as client:
        response = await client.request(method, path)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert "unavailable" in response.json()["error"]


async def test_the_document_describes_the_queue_routes(api: httpx.AsyncClient) -> None:
    document: dict[str, Any] = (await api.get("/openapi.json")).json()
    paths = document["paths"]
    assert paths["/queues"]["get"]["operationId"] == "listQueues"
    for path, method, statuses in [("/queues/{name}", "get", {"200", "401", "404", "503"}),
                                   ("/queues/{name}/pause", "post", {"200", "401", "403", "404", "503"}),
                                   ("/queues/{name}/resume", "post", {"200", "401", "403", "404", "503"})]:  # fmt: skip
        assert set(paths[path][method]["responses"]) == statuses, path
    assert document["components"]["schemas"]["QueueName"]["enum"] == DECLARED
