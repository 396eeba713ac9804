"""Redis Sentinel: the clients of `make_client` and `make_async_client` find the master through the
sentinels and follow it to a new one after a failover; a write reaching a demoted master is an
outage to retry; REDIS_WAIT_REPLICAS makes an enqueue wait for replicas (WAIT) before its 2xx.
Against real redis-servers: a master, two replicas and three sentinels on free ports
(tests/support/sentinel.py). The failover under load, with workers, is in
tests/faults/test_sentinel_failover.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from app.connection.atomic import run_atomically, run_atomically_async
from app.connection.clients import describe, make_async_client, make_client
from app.errors import BrokerUnavailable
from app.keys import Keys
from app.settings import Settings
from tests.support.inprocess import api_client
from tests.support.sentinel import MASTER_NAME, SentinelDeployment, running_sentinels
from tests.support.services import RedisServer, wait_until

API_KEY = "sentinel-api-key-0123456789"
KEYS = Keys()
JOB = {"jobName": "emailJob", "data": {"email": "user@example.com"}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelDeployment]:
    """One deployment for the module; tests that fail it over leave it with a master and a replica."""
    with running_sentinels(tmp_path_factory.mktemp("sentinel")) as made:
        yield made


def settings_of(deployment: SentinelDeployment, **env: str) -> Settings:
    return Settings.from_env({**deployment.env(), "API_KEY": API_KEY, **env})


def test_the_clients_find_the_master_through_the_sentinels(deployment: SentinelDeployment) -> None:
    settings = settings_of(deployment)
    client = make_client(settings)
    try:
        client.set("found", "yes")
        assert client.info("replication")["role"] == "master"
        with deployment.master().client() as master:
            assert master.get("found") == b"yes"
    finally:
        client.close()
    shown = describe(settings)
    assert MASTER_NAME in shown and deployment.sentinel_addresses in shown and "secret" not in shown


def test_a_wrong_sentinel_password_is_an_outage_naming_the_cause(deployment: SentinelDeployment) -> None:
    client = make_client(settings_of(deployment, REDIS_SENTINEL_PASSWORD="wrong"))
    try:
        with pytest.raises(redis.ConnectionError, match="No master found"):
            client.ping()
    finally:
        client.close()


def test_the_clients_follow_the_master_to_the_replica_promoted_by_a_failover(
    deployment: SentinelDeployment,
) -> None:
    """A failover (SENTINEL FAILOVER: the sentinels promote a replica, demote the master and close
    its clients' connections): the pooled connections are replaced by ones to the new master."""
    settings = settings_of(deployment)
    sync_client = make_client(settings)

    async def scenario() -> None:
        async_client = make_async_client(settings)
        try:
            run_atomically(sync_client, [("SET", "before", "1")])
            await run_atomically_async(async_client, [("SET", "before-async", "1")])
            old = deployment.master()
            with deployment.sentinels[0].client() as sentinel:
                sentinel.sentinel_failover(MASTER_NAME)
            new = deployment.wait_for_new_master(old)
            # Until the sentinels demote it, the old master still takes writes (and loses them
            # when it resyncs from the new one): the window README's "Redis Sentinel" describes.
            wait_until(
                lambda: old.client().info("replication")["role"] == "slave",
                timeout=20,
                message="the old master to become a replica",
            )
            await _eventually(lambda: run_atomically(sync_client, [("SET", "after", "2")]))
            await _eventually(lambda: run_atomically_async(async_client, [("SET", "after-async", "2")]))
            with new.client() as master:
                assert master.mget("before", "after", "after-async") == [b"1", b"2", b"2"]
        finally:
            await async_client.aclose()

    try:
        asyncio.run(scenario())
    finally:
        sync_client.close()


async def _eventually(write: Callable[[], Any], timeout: float = 10) -> None:
    """`write` until it goes through (BrokerUnavailable meanwhile: the failover's short outage)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = write()
            if asyncio.iscoroutine(result):
                await result
            return
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def test_a_demoted_master_without_sentinels_is_an_outage_too(deployment: SentinelDeployment) -> None:
    """REDIS_URL naming a replica (a DNS name that moved): the refused write is ReadOnlyError,
    one of the errors every component treats as Redis being unavailable."""
    replica = next(node for node in deployment.data if node.alive() and node.port != deployment.master_port())
    settings = Settings.from_env({"REDIS_URL": f"redis://:{deployment.password}@127.0.0.1:{replica.port}/0"})
    client = make_client(settings)
    try:
        with pytest.raises(redis.ReadOnlyError):
            run_atomically(client, [("SET", "x", "1")])
    finally:
        client.close()


@pytest.mark.anyio
async def test_an_enqueue_waits_for_the_replicas_it_is_told_to(deployment: SentinelDeployment) -> None:
    live_replicas = sum(1 for node in deployment.data if node.alive()) - 1
    settings = settings_of(deployment, REDIS_WAIT_REPLICAS=str(live_replicas), REDIS_WAIT_TIMEOUT_MS="2000")
    async with api_client(settings, **{"x-api-key": API_KEY}) as api:
        single = await api.post("/enqueue", json=JOB)
        once = await api.post("/enqueue", json=JOB, headers={"Idempotency-Key": "wait-1"})
        batch = await api.post("/enqueue/batch", json={"jobs": [JOB, JOB]})
        assert (single.status_code, once.status_code, batch.status_code) == (202, 202, 202), batch.text
        ids = [single.json()["jobId"], once.json()["jobId"], *batch.json()["jobIds"]]
    # Acknowledged by every replica: each has every record at once.
    for node in deployment.data:
        if node.alive() and node.port != deployment.master_port():
            with node.client() as replica:
                assert all(replica.exists(KEYS.job(job_id)) for job_id in ids), node.name


@pytest.mark.anyio
async def test_too_few_replicas_is_a_503_saying_the_job_may_or_may_not_be_kept(redis_server: RedisServer) -> None:
    settings = Settings.from_env(
        {"REDIS_URL": redis_server.url, "API_KEY": API_KEY, "REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "50"}
    )
    async with api_client(settings, **{"x-api-key": API_KEY}) as api:
        answers = [
            await api.post("/enqueue", json=JOB),
            await api.post("/enqueue", json=JOB, headers={"Idempotency-Key": "k-1"}),
            await api.post("/enqueue/batch", json={"jobs": [JOB]}),
        ]
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"]
            message = answer.json()["error"]
            assert "may or may not be kept" in message and "0 of the 1 replica" in message, message
            assert "Idempotency-Key" in message
        # The retry with the same key finds the job, and still waits for a replica (none here).
        again = await api.post("/enqueue", json=JOB, headers={"Idempotency-Key": "k-1"})
        assert again.status_code == 503, again.text


@pytest.mark.anyio
async def test_concurrent_enqueues_share_one_wait(redis_server: RedisServer) -> None:
    """A coalesced batch of concurrent requests is followed by one WAIT, not one per request."""
    settings = Settings.from_env(
        {"REDIS_URL": redis_server.url, "API_KEY": API_KEY, "REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "200"}
    )
    with redis_server.client() as admin:
        admin.config_resetstat()
        async with api_client(settings, **{"x-api-key": API_KEY}) as api:
            answers = await asyncio.gather(*(api.post("/enqueue", json=JOB) for _ in range(50)))
        assert {answer.status_code for answer in answers} == {503}
        waits = int(admin.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
    # Each WAIT times out (no replica) after 200 ms: 50 requests in 1 or 2 batches, not 50 WAITs.
    assert 1 <= waits <= 3, waits
