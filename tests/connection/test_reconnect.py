"""After a Redis restart, the connections pooled before it are dead: each is found so and replaced,
and a command that meets one unawares is sent once more on a fresh connection when that is safe
(a read, an idempotent write, a write that could not be sent), so that once Redis answers again no
request gets a 503. A write sent whose reply was lost is in doubt and is not sent again
(app/connection/clients.py, app/connection/atomic.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio

from app.connection.atomic import run_atomically, run_atomically_async
from app.connection.clients import make_async_client, make_client
from app.errors import BrokerUnavailable
from app.keys import Keys
from app.settings import Settings
from tests.support.services import RedisServer, Stack, wait_until

KEYS = Keys()
#: Concurrent requests of each kind in a burst: enough to open dozens of pooled connections.
CONCURRENCY = 80


async def _burst(base: str, api_key: str, job_ids: list[str], tag: str) -> list[tuple[str, int, Any]]:
    """CONCURRENCY concurrent GET /jobs/{id} and as many POST /enqueue, plus a few GET /jobs,
    idempotent enqueues (keys and addresses carrying `tag`) and /metrics scrapes; each request on
    its own HTTP connection."""
    limits = httpx.Limits(max_connections=4 * CONCURRENCY, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, headers={"x-api-key": api_key}, timeout=15, limits=limits) as http:

        async def call(kind: str, method: str, path: str, **kwargs: Any) -> tuple[str, int, Any]:
            response = await http.request(method, path, **kwargs)
            body = response.json() if "json" in response.headers.get("content-type", "") else response.text
            return kind, response.status_code, body

        def enqueue(n: int, **headers: str) -> Any:
            job = {"jobName": "emailJob", "data": {"email": f"{tag}{n}@example.com"}}
            return call("enqueue", "POST", "/enqueue", json=job, headers=headers)

        calls = [
            *(call("get", "GET", f"/jobs/{job_ids[n % len(job_ids)]}") for n in range(CONCURRENCY)),
            *(enqueue(n) for n in range(CONCURRENCY)),
            *(call("list", "GET", "/jobs?limit=5") for _ in range(10)),
            *(enqueue(n, **{"Idempotency-Key": f"{tag}-{n}"}) for n in range(10)),
            *(call("metrics", "GET", "/metrics") for _ in range(4)),
        ]
        return list(await asyncio.gather(*calls))


def burst(stack: Stack, base: str, job_ids: list[str], tag: str) -> list[tuple[str, int, Any]]:
    return asyncio.run(_burst(base, stack.api_key, job_ids, tag))


def failures(answers: list[tuple[str, int, Any]]) -> list[tuple[str, int, Any]]:
    return [answer for answer in answers if answer[1] not in (200, 202)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _ready(base: str) -> bool:
    return httpx.get(base + "/readyz", timeout=2).status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "sigkill"])
def test_no_503_once_redis_is_back_after_a_restart(
    stack: Stack, redis_server: RedisServer, redis_client: redis.Redis, kill: bool
) -> None:
    _, base = stack.api()
    api = stack.client(base)
    job_ids = [api.enqueue("emailJob", {"email": f"seed{n}@example.com"}) for n in range(8)]
    # Many connections left open in the API's pools, then Redis restarted under them.
    assert failures(burst(stack, base, job_ids, "before")) == []
    redis_server.restart(kill=kill)
    wait_until(lambda: _ready(base), timeout=10, message="/readyz to answer 200 after the restart")

    answers = burst(stack, base, job_ids, "after")
    unavailable = [answer for answer in answers if answer[1] == 503]
    assert unavailable == [], f"{len(unavailable)} of {len(answers)} requests got a 503 once /readyz was 200"
    assert failures(answers) == []
    assert all("taskqueue_redis_up 1.0" in body for kind, _, body in answers if kind == "metrics")
    accepted = [body["jobId"] for kind, status, body in answers if kind == "enqueue" and status == 202]
    assert len(accepted) == CONCURRENCY + 10, "every enqueue, idempotent ones included, added a job"
    with redis_client.pipeline(transaction=False) as pipeline:
        for job_id in accepted:
            pipeline.exists(KEYS.job(job_id))
        assert all(pipeline.execute()), "every accepted job has its record"


# In process: a connection Redis has just closed (CLIENT KILL), used before the event loop has
# seen it close, so that the pool hands it out and the command is written to it.


def kill_clients(redis_client: redis.Redis) -> None:
    """Redis closes every connection but `redis_client`'s."""
    redis_client.client_kill_filter(_type="normal", skipme=True)


@pytest.mark.anyio
async def test_a_read_meeting_a_closed_connection_is_sent_again(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    client = make_async_client(Settings.from_env({"REDIS_URL": redis_server.url}))
    try:
        await client.set("k", "v")
        kill_clients(redis_client)
        assert await client.get("k") == b"v"
        kill_clients(redis_client)
        async with client.pipeline(transaction=False) as pipeline:
            pipeline.get("k").exists("k")
            assert await pipeline.execute() == [b"v", 1]
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_an_atomic_write_sent_on_a_closed_connection_is_in_doubt_and_not_sent_again(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    client = make_async_client(Settings.from_env({"REDIS_URL": redis_server.url}))
    try:
        await client.ping()
        kill_clients(redis_client)
        # Written to a connection Redis had closed: this one never ran, but from here a lost
        # reply cannot be told from one lost after the write ran.
        with pytest.raises(BrokerUnavailable):
            await run_atomically_async(client, [("INCR", "n")])
        assert redis_client.get("n") is None, "not sent a second time"
        await run_atomically_async(client, [("INCR", "n")])
        assert redis_client.get("n") == b"1"
    finally:
        await client.aclose()


def break_next_send(pool: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The next connection `pool` hands out turns out dead as a command is written to it (as
    redis-py does then, it is closed); returns the connections so broken."""
    broken: list[Any] = []
    get_connection, is_async = pool.get_connection, asyncio.iscoroutinefunction(pool.get_connection)

    def breaking(connection: Any) -> Any:
        if not broken:
            broken.append(connection)
            send = connection.send_packed_command

            async def dead_async(*args: Any, **kwargs: Any) -> None:
                monkeypatch.setattr(connection, "send_packed_command", send)
                await connection.disconnect()
                raise redis.ConnectionError("Error 32 while writing to socket. Broken pipe.")

            def dead(*args: Any, **kwargs: Any) -> None:
                monkeypatch.setattr(connection, "send_packed_command", send)
                connection.disconnect()
                raise redis.ConnectionError("Error 32 while writing to socket. Broken pipe.")

            monkeypatch.setattr(connection, "send_packed_command", dead_async if is_async else dead)
        return connection

    async def get_async() -> Any:
        return breaking(await get_connection())

    monkeypatch.setattr(pool, "get_connection", get_async if is_async else lambda: breaking(get_connection()))
    return broken


@pytest.mark.anyio
async def test_an_atomic_write_that_could_not_be_sent_is_sent_once_more(
    redis_server: RedisServer, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_async_client(Settings.from_env({"REDIS_URL": redis_server.url}))
    try:
        broken = break_next_send(client.connection_pool, monkeypatch)
        await run_atomically_async(client, [("INCR", "n"), ("RPUSH", "l", "x")])
        assert broken, "the first send failed"
        assert redis_client.get("n") == b"1" and redis_client.lrange("l", 0, -1) == [b"x"]
    finally:
        await client.aclose()


def test_a_sync_atomic_write_that_could_not_be_sent_is_sent_once_more(
    redis_server: RedisServer, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(Settings.from_env({"REDIS_URL": redis_server.url}))
    try:
        broken = break_next_send(client.connection_pool, monkeypatch)
        run_atomically(client, [("INCR", "n")])
        assert broken, "the first send failed"
        assert redis_client.get("n") == b"1"
    finally:
        client.close()
