"""GET /jobs/{jobId}?wait=<seconds> (app/api/long_poll.py), in process on a private redis-server:
answered as soon as the job's state is final or at the timeout, one poller however many wait, a
client that goes away stops waiting, and 400 for a bad value."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis

from app.api import long_poll
from app.http import create_app
from app.keys import Keys
from app.settings import Settings
from tests.support.inprocess import BASE_URL, api_client, app_of
from tests.support.services import RedisServer

pytestmark = pytest.mark.anyio

API_KEY = "long-poll-api-key-0123456789"
KEYS = Keys()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings_for(redis_server: RedisServer) -> Settings:
    return Settings.from_env({"REDIS_URL": redis_server.url, "API_KEY": API_KEY})


@pytest.fixture
async def api(redis_server: RedisServer) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings_for(redis_server), **{"x-api-key": API_KEY}) as client:
        yield client


async def queued_job(api: httpx.AsyncClient) -> str:
    """A job that stays queued (delayed for an hour) until the test changes its record."""
    response = await api.post(
        "/enqueue", json={"jobName": "emailJob", "data": {"email": "a@example.com"}, "delayMs": 3_600_000}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["jobId"])


async def until_waiting(app: Any, count: int, timeout: float = 5.0) -> None:
    """Until `count` long polls wait in the app's poller (the requests have reached it)."""
    deadline = time.monotonic() + timeout
    while getattr(app.state, "long_poll", None) is None or app.state.long_poll.waiting < count:
        assert time.monotonic() < deadline, f"{count} long polls never started waiting"
        await asyncio.sleep(0.01)


def set_state(redis_client: redis.Redis, job_id: str, state: str) -> None:
    redis_client.hset(KEYS.job(job_id), "state", state)


async def timed_get(api: httpx.AsyncClient, job_id: str, wait: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await api.get(f"/jobs/{job_id}", params={"wait": wait})
    return response, time.monotonic() - started


@pytest.mark.parametrize("value", ["abc", "-1", "61", "60.5", "1e999", "nan", "inf", "1,5", " 1", "9" * 40])
async def test_a_bad_wait_is_a_400(api: httpx.AsyncClient, value: str) -> None:
    job_id = await queued_job(api)
    response = await api.get(f"/jobs/{job_id}", params={"wait": value})
    assert response.status_code == 400, response.text
    assert "wait must be a number of seconds from 0 to 60" in response.json()["error"]


@pytest.mark.parametrize("value", ["", "0", "0.0"])
async def test_no_wait_answers_at_once(api: httpx.AsyncClient, value: str) -> None:
    job_id = await queued_job(api)
    response, elapsed = await timed_get(api, job_id, value)
    assert response.status_code == 200 and response.json()["state"] == "queued" and elapsed < 0.5


async def test_a_final_job_is_answered_at_once_and_an_unknown_one_is_a_404(
    api: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    job_id = await queued_job(api)
    for state in ("succeeded", "failed", "skipped"):
        set_state(redis_client, job_id, state)
        response, elapsed = await timed_get(api, job_id, "30")
        assert response.status_code == 200 and response.json()["state"] == state and elapsed < 0.5
    response, elapsed = await timed_get(api, "no-such-job", "30")
    assert response.status_code == 404 and elapsed < 0.5


async def test_the_answer_comes_when_the_job_finishes(
    api: httpx.AsyncClient, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks: list[int] = []
    states = long_poll.StatePoller._states

    async def counted(self: long_poll.StatePoller, job_ids: list[str]) -> list[bytes | None]:
        ticks.append(len(job_ids))
        return await states(self, job_ids)

    monkeypatch.setattr(long_poll.StatePoller, "_states", counted)
    job_id = await queued_job(api)
    waiting = asyncio.create_task(timed_get(api, job_id, "30"))
    await until_waiting(app_of(api), 1)
    set_state(redis_client, job_id, "running")  # not final: still waiting
    read_before = len(ticks)
    deadline = time.monotonic() + 5
    while len(ticks) < read_before + 3:  # three reads of the state since it became running
        assert time.monotonic() < deadline, "the poller stopped reading"
        await asyncio.sleep(0.01)
    assert not waiting.done()
    set_state(redis_client, job_id, "succeeded")
    finished = time.monotonic()
    response, elapsed = await waiting
    print(f"\nanswered {(time.monotonic() - finished) * 1000:.0f} ms after the record became final")
    assert response.status_code == 200 and response.json()["state"] == "succeeded"
    assert response.json()["jobId"] == job_id and elapsed < 2


async def test_at_the_timeout_the_record_is_answered_as_it_is(api: httpx.AsyncClient) -> None:
    job_id = await queued_job(api)
    response, elapsed = await timed_get(api, job_id, "0.5")
    assert response.status_code == 200 and response.json()["state"] == "queued"
    assert 0.5 <= elapsed < 1.2


async def test_a_job_deleted_while_waited_on_is_a_404(api: httpx.AsyncClient, redis_client: redis.Redis) -> None:
    job_id = await queued_job(api)
    waiting = asyncio.create_task(timed_get(api, job_id, "30"))
    await until_waiting(app_of(api), 1)
    redis_client.delete(KEYS.job(job_id))
    response, elapsed = await waiting
    assert response.status_code == 404 and elapsed < 1.5


async def test_one_poller_reads_every_waited_job_in_one_round_trip_a_tick(
    api: httpx.AsyncClient, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    states = long_poll.StatePoller._states

    async def counted(self: long_poll.StatePoller, job_ids: list[str]) -> list[bytes | None]:
        reads.append(len(job_ids))
        return await states(self, job_ids)

    monkeypatch.setattr(long_poll.StatePoller, "_states", counted)
    job_ids = [await queued_job(api) for _ in range(20)]
    started = time.monotonic()
    answers = await asyncio.gather(*(timed_get(api, job_id, "1") for job_id in job_ids for _ in range(3)))
    elapsed = time.monotonic() - started
    assert all(response.status_code == 200 for response, _ in answers)
    print(f"\n60 waits on 20 jobs for 1 s: {len(reads)} round trips, {sum(reads)} state reads")
    assert len(reads) <= elapsed / long_poll.POLL_INTERVAL_S + 2
    assert max(reads) == 20  # one read per job, however many wait on it


async def test_past_max_waiters_a_wait_answers_at_once(api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(long_poll, "MAX_WAITERS", 2)
    job_id = await queued_job(api)
    held = [asyncio.create_task(timed_get(api, job_id, "1")) for _ in range(2)]
    await until_waiting(app_of(api), 2)
    response, elapsed = await timed_get(api, job_id, "1")
    assert response.status_code == 200 and elapsed < 0.5
    assert all(elapsed >= 0.9 for _, elapsed in await asyncio.gather(*held))


async def test_a_client_that_goes_away_stops_the_wait(redis_server: RedisServer) -> None:
    app = create_app(settings_for(redis_server))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=BASE_URL, headers={"x-api-key": API_KEY}
        ) as api:
            job_id = await queued_job(api)
        gone = asyncio.Event()
        sent: list[dict[str, Any]] = []
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": f"/jobs/{job_id}", "raw_path": f"/jobs/{job_id}".encode(), "query_string": b"wait=30",
            "headers": [(b"x-api-key", API_KEY.encode()), (b"host", b"testserver")], "client": ("127.0.0.1", 1),
            "server": ("testserver", 80), "root_path": "",
        }  # fmt: skip
        request = asyncio.create_task(app(scope, receive, send))
        await until_waiting(app, 1)
        assert not request.done()
        gone.set()
        started = time.monotonic()
        await asyncio.wait_for(request, timeout=5)
        assert time.monotonic() - started < 1
        assert app.state.long_poll.waiting == 0 and not app.state.long_poll._waiters


async def test_redis_down_while_waiting_is_a_503_at_the_timeout(
    api: httpx.AsyncClient, redis_server: RedisServer
) -> None:
    job_id = await queued_job(api)
    waiting = asyncio.create_task(timed_get(api, job_id, "1"))
    await until_waiting(app_of(api), 1)
    redis_server.stop()
    response, elapsed = await waiting
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert 1 <= elapsed < 6


async def test_long_polls_are_timed_apart_from_the_routes_ordinary_reads(api: httpx.AsyncClient) -> None:
    job_id = await queued_job(api)
    await api.get(f"/jobs/{job_id}", params={"wait": "0.05"})
    await api.get(f"/jobs/{job_id}")
    metrics = (await api.get("/metrics")).text
    assert 'taskqueue_http_request_duration_seconds_count{method="GET",route="/jobs/{job_id}?wait"} 1.0' in metrics
    assert 'taskqueue_http_request_duration_seconds_count{method="GET",route="/jobs/{job_id}"} 1.0' in metrics
