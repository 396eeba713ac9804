"""Workers on a Redis Cluster: real API and worker processes (`dramatiq app.actors`) against three
masters made with `redis-cli --cluster create`, REDIS_CLUSTER=true and REDIS_URL at one node.

Two queues on different masters ("default": the built-in job types; "reports": shardJob of
tests/support/cluster_jobs.py, limited to one at a time), and what the service promises on one
Redis holds on each: jobs run and are recorded on their queue's master, retries, dead letters and
a bulk retry, pause and cancel through the start gate, the concurrency slot, a SIGKILLed worker's
jobs run again on another, cleanup of every shard. The per-job ledger (tests/faults/ledger.py)
reads each keyspace on its own master.

One cluster, one API and (at any time) one live worker for the module: each test reads only the
jobs it enqueued."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import cast

import pytest

from app.connection.clients import make_shards
from app.connection.shards import Shards
from app.keys import Keys
from app.settings import Settings
from tests.faults import ledger
from tests.faults.receiver import Receiver
from tests.support.cluster import ClusterDeployment
from tests.support.cluster_app import cluster  # noqa: F401 - the module's cluster fixture
from tests.support.http import ApiClient
from tests.support.services import ROOT, RedisServer, Stack, wait_until

pytestmark = [pytest.mark.fault, pytest.mark.slow]

JOB_MODULES = "tests.support.cluster_jobs"
QUEUES = ("default", "reports")
HEARTBEAT_TIMEOUT_S = 2.0  # HEARTBEAT_TIMEOUT_MS of the test stack


@pytest.fixture(scope="module")
def stack(cluster: ClusterDeployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # noqa: F811
    # Stack's Redis is the cluster: its settings point REDIS_URL at the first node.
    made = Stack(cast(RedisServer, cluster), tmp_path_factory.mktemp("stack"), **cluster.env(), JOB_MODULES=JOB_MODULES)
    try:
        _, base = made.api()
        made.worker("worker-1", threads=4)
        made.client(base)
        yield made
    finally:
        made.discard_all()


@pytest.fixture(scope="module")
def api(stack: Stack) -> ApiClient:
    return cast(ApiClient, stack.clients[0])


@pytest.fixture(scope="module")
def shards(stack: Stack) -> Iterator[Shards]:
    """The cluster's keyspaces as the service routes them, for the tests' own reads."""
    settings = Settings.from_env(stack.env)
    made = make_shards(settings, Keys.root(settings.namespace, cluster=True))
    yield made
    made.close()


def settle(shards: Shards, job_ids: list[str], timeout: float = 30) -> ledger.Ledger:
    settled = ledger.settle_across(shards, job_ids, QUEUES, timeout=timeout)
    ledger.assert_at_rest(settled)
    return settled


def test_the_two_queues_run_on_different_masters_each_job_recorded_on_its_own(
    cluster: ClusterDeployment,  # noqa: F811
    api: ApiClient,
    shards: Shards,
    receiver: Receiver,
) -> None:
    default_master, reports_master = cluster.master_of("default"), cluster.master_of("reports")
    assert default_master != reports_master, "the test's queues must land on different masters"
    hook = api.enqueue("webhookJob", {"url": receiver.url("/ok"), "payload": {"n": 1}})
    report = api.enqueue("shardJob", {"n": 7})
    assert hook.endswith("-default") and report.endswith("-reports")  # each id names its queue
    wait_until(lambda: api.state(hook) == api.state(report) == "succeeded", message="both jobs to succeed")
    assert api.job(report)["result"] == {"n": 7} and receiver.count(hook) == 1

    # Everything of a queue is on its master: records, indexes, messages, heartbeats, the slot.
    on_reports = cluster.keys_on(reports_master, "*{reports}*")
    assert any(key.startswith("taskqueue:{reports}:succeeded:") for key in on_reports), on_reports
    assert "dramatiq:{reports}:__heartbeats__" in on_reports and "dramatiq:{default}:__heartbeats__" in (
        cluster.keys_on(default_master, "*{default}*")
    )
    assert cluster.keys_on(default_master, "*{reports}*") == []
    assert cluster.keys_on(reports_master, "*{default}*") == []
    settled = settle(shards, [hook, report])
    assert settled.succeeded == 2 and settled.executions == 2


def test_a_failing_job_is_retried_on_its_shard_until_it_succeeds(
    api: ApiClient, shards: Shards, receiver: Receiver
) -> None:
    job = api.enqueue("webhookJob", {"url": receiver.url("/flaky/2"), "payload": {}})
    wait_until(lambda: api.state(job) == "succeeded", timeout=20, message="the third attempt to succeed")
    record = api.job(job)
    assert record["attempts"] == 3 and receiver.count(job) == 3
    assert [entry["attempt"] for entry in record["history"]] == [1, 2]
    settle(shards, [job])


def test_a_job_out_of_retries_is_a_dead_letter_and_a_bulk_retry_runs_it_again(
    api: ApiClient, shards: Shards, receiver: Receiver
) -> None:
    # Fails its first 6 deliveries (the first attempt and 5 retries), then succeeds.
    hook = api.enqueue("webhookJob", {"url": receiver.url("/flaky/6"), "payload": {}})
    report = api.enqueue("shardJob", {"fail": True})  # fails for good at once
    wait_until(lambda: api.state(hook) == api.state(report) == "failed", timeout=30, message="both to fail")
    for job, queue in ((hook, "default"), (report, "reports")):
        shard = shards.for_queue(queue)
        assert shard.client.exists(shard.keys.failed_job_compat(job)), f"failedJobs:{{{queue}}}:{job}"
        assert shard.client.zcard(shard.keys.dead_letters(queue)) >= 1
    assert receiver.count(hook) == 6
    failed = api.http.get("/jobs", params={"state": "failed", "limit": 100}).json()["jobs"]
    assert {hook, report} <= {record["jobId"] for record in failed}

    retried = api.http.post("/jobs/retry", json={"state": "failed", "jobName": "webhookJob"})
    assert retried.status_code == 200 and retried.json()["requeued"] >= 1, retried.text
    wait_until(lambda: api.state(hook) == "succeeded", timeout=20, message="the retried job to succeed")
    assert receiver.count(hook) == 7 and api.state(report) == "failed"  # only webhookJobs were retried
    settled = settle(shards, [hook, report])
    assert settled.succeeded == 1 and settled.failed == 1


def test_a_paused_queue_starts_nothing_and_a_job_canceled_meanwhile_never_runs(api: ApiClient, shards: Shards) -> None:
    assert api.http.post("/queues/reports/pause").status_code == 200
    try:
        kept, dropped = api.enqueue("shardJob", {"n": 1}), api.enqueue("shardJob", {"n": 2})
        canceled = api.http.post(f"/jobs/{dropped}/cancel")
        assert canceled.status_code == 200 and canceled.json()["state"] == "canceled", canceled.text
        time.sleep(1.0)  # a span of time with no start is what is measured (workers read pauses every 0.1 s)
        assert api.state(kept) == "queued"
    finally:
        assert api.http.post("/queues/reports/resume").status_code == 200
    wait_until(lambda: api.state(kept) == "succeeded", message="the resumed queue's job to run")
    assert api.job(dropped)["state"] == "canceled" and api.job(dropped)["executions"] == 0
    settle(shards, [kept, dropped])


def test_a_running_job_sees_its_cancel_which_reaches_the_worker_through_its_queue_keyspace(
    api: ApiClient, shards: Shards
) -> None:
    job = api.enqueue("shardJob", {"sleepMs": 20_000})
    wait_until(lambda: api.state(job) == "running", message="the job to start")
    response = api.http.post(f"/jobs/{job}/cancel")
    assert response.status_code == 202 and "cancel is requested" in response.json()["message"], response.text
    wait_until(lambda: api.state(job) == "canceled", timeout=10, message="the job to stop on its cancel")
    settle(shards, [job])


def test_the_concurrency_limit_holds_on_the_queue_shard_while_its_slot_is_renewed(
    api: ApiClient, shards: Shards
) -> None:
    # The first runs longer than a slot's lease (the heartbeat timeout): only its renewal, on the
    # queue's master, keeps the next from starting beside it.
    sleeps = [int(HEARTBEAT_TIMEOUT_S * 1000 * 1.5), 300, 300]
    ids = [api.enqueue("shardJob", {"n": n, "sleepMs": sleep}) for n, sleep in enumerate(sleeps)]
    wait_until(lambda: all(api.state(job) == "succeeded" for job in ids), timeout=20, message="all three to run")
    spans = sorted((api.job(job)["startedAt"], api.job(job)["finishedAt"]) for job in ids)
    for (_, finished), (started, _) in zip(spans, spans[1:], strict=False):
        assert started >= finished, f"two shardJobs ran at once: {spans}"
    slots = shards.for_queue("reports")
    assert slots.client.zcard(slots.keys.slots("shardJob")) == 0  # every slot given back
    settle(shards, ids)


def test_a_killed_workers_jobs_run_again_on_another_worker_on_both_shards(
    stack: Stack, api: ApiClient, shards: Shards, receiver: Receiver
) -> None:
    victims = [service for service in stack.services if service.name.startswith("worker") and service.alive()]
    hook = api.enqueue("webhookJob", {"url": receiver.url("/hold"), "payload": {}})
    report = api.enqueue("shardJob", {"sleepMs": 1500})
    wait_until(lambda: receiver.count(hook) == 1 and api.state(report) == "running", message="both jobs to start")
    survivor = stack.worker(f"worker-{len(stack.services)}", threads=4)

    killed = time.monotonic()
    for victim in victims:
        victim.kill_group()  # every process of the worker, mid-job
    wait_until(lambda: receiver.count(hook) == 2, timeout=HEARTBEAT_TIMEOUT_S + 10, message="the hook to run again")
    recovery_s = time.monotonic() - killed
    print(f"\nCLUSTER a SIGKILLed worker's job started again on another {recovery_s:.2f} s after the kill")
    receiver.release()
    wait_until(
        lambda: api.state(hook) == api.state(report) == "succeeded", timeout=20, message="both second runs to finish"
    )
    # The shardJob's slot was the dead worker's lease: it ran again once the lease ran out.
    assert api.job(hook)["executions"] == 2 and api.job(report)["executions"] == 2
    assert survivor.alive()
    settle(shards, [hook, report])


def test_cleanup_runs_on_every_shard(stack: Stack, api: ApiClient, shards: Shards, receiver: Receiver) -> None:
    failed = [api.enqueue("shardJob", {"n": n, "fail": True}) for n in range(2)]
    hook = api.enqueue("webhookJob", {"url": receiver.url("/fail"), "payload": {}}, maxRetries=0)
    failed.append(hook)
    wait_until(lambda: all(api.state(job) == "failed" for job in failed), timeout=20, message="the jobs to fail")

    # On demand, through a worker (its retention: nothing here is old enough), status in the root keys.
    root = shards.keys.root_keys()
    cleanup = api.enqueue("cleanupJob", {})
    wait_until(lambda: api.state(cleanup) == "succeeded", message="the cleanup job to succeed")
    assert shards.client(root).hget(root.cleanup_status(), "lastRunAt")
    assert all(api.state(job) == "failed" for job in failed)

    # Once from the command line with a retention of one second: every shard's old records go.
    env = {**stack.env, "LOG_RETENTION_SECONDS": "1"}

    def cleaned() -> dict[str, int] | None:
        command = [sys.executable, "-m", "app.outcomes.cleanup"]
        run = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        report: dict[str, int] = json.loads(run.stdout.strip().splitlines()[-1])
        return report if all(api.http.get(f"/jobs/{job}").status_code == 404 for job in failed) else None

    report = wait_until(cleaned, timeout=30, interval=0.5, message="cleanup to remove the failed records")
    assert report["records"] >= 1 and report["dead_letters"] >= 1, report
    for queue in QUEUES:
        shard = shards.for_queue(queue)
        assert shard.client.zcard(shard.keys.dead_letters(queue)) == 0, queue
        assert not any(shard.client.exists(shard.keys.failed_job_compat(job)) for job in failed)
