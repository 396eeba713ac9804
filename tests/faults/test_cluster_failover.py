"""A Redis Cluster master SIGKILLed under a steady enqueue load, with workers running: three masters,
each with two replicas (`redis-cli --cluster create --cluster-replicas 2`, so that the promoted
replica still has one of its own to WAIT for). The cluster promotes a replica; the API and the
workers follow the new slot map by themselves, and every job accepted with a 2xx
(REDIS_WAIT_REPLICAS=1) ends succeeded. Prints how long enqueue answered no 2xx.

With one replica per master, the promoted one has none left: enqueue then answers 503 (the write
ran but no replica acknowledged it) until a replica joins, which is the guarantee working."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from redis.crc import key_slot

from app.connection.clients import make_shards
from app.keys import Keys
from app.settings import Settings
from tests.faults import ledger
from tests.faults.test_sentinel_failover import STEADY_S, Load
from tests.support.cluster import ClusterDeployment, running_cluster
from tests.support.services import RedisServer, Stack, wait_until

pytestmark = [pytest.mark.fault, pytest.mark.slow]

#: The cluster's node timeout: a master is failed over about this long after it stops answering.
NODE_TIMEOUT_MS = 2000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterDeployment]:
    with running_cluster(tmp_path / "cluster", replicas=2, node_timeout_ms=NODE_TIMEOUT_MS) as made:
        yield made


def master_port(node: RedisServer, tag: str) -> int | None:
    """The port of the master that `node` says serves a hash tag's slot."""
    slot = key_slot(tag.encode())
    with node.client() as client:
        for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(master[1])
    return None


def test_every_job_accepted_across_a_cluster_master_failover_succeeds(
    cluster: ClusterDeployment, tmp_path: Path
) -> None:
    stack = Stack(
        cast(RedisServer, cluster),
        tmp_path,
        **cluster.env(),
        REDIS_WAIT_REPLICAS="1",
        REDIS_WAIT_TIMEOUT_MS="1000",
    )
    try:
        _, base = stack.api()
        stack.worker(threads=4)
        load = Load(base, stack.api_key)
        thread = threading.Thread(target=load.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: len(load.accepted) >= 50, timeout=STEADY_S * 5, message="the load to get going")
            time.sleep(STEADY_S)  # a steady load, jobs running
            old_port = cluster.master_of("default")  # emailJob's queue
            old = next(node for node in cluster.nodes if node.port == old_port)
            witness = next(node for node in cluster.nodes if node.port != old_port)
            killed = time.monotonic()
            old.stop(kill=True)
            new_port = wait_until(
                lambda: (port := master_port(witness, "default")) != old_port and port,
                timeout=30,
                message="a replica to be promoted",
            )
            promoted = time.monotonic() - killed
            back = wait_until(
                lambda: load.first_2xx_sent_after(killed), timeout=30, interval=0.05, message="a 2xx after the kill"
            )
            time.sleep(STEADY_S)  # more load on the new master
        finally:
            load.stop.set()
            thread.join(timeout=15)
        statuses = sorted({status for _, _, status in load.answers})
        refused = sum(1 for _, _, status in load.answers if status >= 300 or status == 0)
        print(
            f"\nCLUSTER FAILOVER replica {new_port} promoted {promoted:.1f}s after the SIGKILL; enqueue answered "
            f"2xx again {back - killed:.1f}s after it (cluster-node-timeout={NODE_TIMEOUT_MS}); "
            f"{len(load.answers)} requests, {len(load.accepted)} accepted, {refused} refused (statuses {statuses})"
        )
        assert all(status in (200, 202, 503) for _, _, status in load.answers), statuses
        assert back - killed < NODE_TIMEOUT_MS / 1000 + 15, "enqueue came back within the node timeout plus seconds"

        settings = Settings.from_env({**cluster.env(), "REDIS_URL": witness.url})
        shards = make_shards(settings, Keys.root(settings.namespace, cluster=True))
        try:
            settled = ledger.settle_across(shards, load.accepted, ("default",), timeout=60)
        finally:
            shards.close()
        ledger.assert_at_rest(settled)
        assert settled.succeeded == settled.accepted == len(set(load.accepted)), settled.details()
    finally:
        stack.discard_all()
