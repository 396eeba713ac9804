"""Clients built from the settings (app/connection/clients.py): a Redis that is a node of a Redis
Cluster is refused at start by every component unless REDIS_CLUSTER is set, with the same message,
before anything is written, and a standalone Redis is refused with REDIS_CLUSTER set (the keys'
layout differs); a Redis that does not answer yet is not refused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio

from app.connection.clients import check_cluster_mode, check_cluster_mode_async
from app.errors import SettingsError
from app.settings import Settings
from tests.support.services import ROOT, VENV_BIN, RedisServer, Stack, free_port, running_redis

#: What each component's refusal says (the start of app.connection.clients.CLUSTER_REFUSED).
REFUSED = "is a node of a Redis Cluster (cluster_enabled:1), but REDIS_CLUSTER is not set: set REDIS_CLUSTER=true"


@pytest.fixture(scope="module")
def cluster_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server in cluster mode (a node with no slots: what `INFO cluster` says is all
    that is asked)."""
    # Its cluster bus port given: by default it is the port plus 10,000, which a free port above
    # 55,535 cannot have (the server then refuses to start).
    cluster = ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
    with running_redis(tmp_path_factory.mktemp("cluster-node"), extra_args=cluster) as server:
        yield server


def settings_for(url: str, *, cluster: bool = False) -> Settings:
    return Settings(api_key="k" * 32, redis_url=url, redis_cluster=cluster)


def test_a_cluster_node_is_refused_and_a_standalone_redis_is_not(
    cluster_node: RedisServer, redis_server: RedisServer
) -> None:
    with cluster_node.client() as client, pytest.raises(SettingsError, match="REDIS_CLUSTER=true") as refused:
        check_cluster_mode(client, settings_for(cluster_node.url))
    assert REFUSED in str(refused.value) and f"127.0.0.1:{cluster_node.port}" in str(refused.value)
    with cluster_node.client() as client:
        check_cluster_mode(client, settings_for(cluster_node.url, cluster=True))
    with redis_server.client() as client:
        check_cluster_mode(client, settings_for(redis_server.url))
        with pytest.raises(SettingsError, match="is not a node of a Redis Cluster") as standalone:
            check_cluster_mode(client, settings_for(redis_server.url, cluster=True))
    assert "leave REDIS_CLUSTER out" in str(standalone.value)
    # Not answering yet: the outage is waited out later, like any other.
    down = settings_for(f"redis://127.0.0.1:{free_port()}/0")
    with redis.Redis.from_url(down.redis_url) as client:
        check_cluster_mode(client, down)

    async def check_async(url: str) -> None:
        client = redis.asyncio.Redis.from_url(url)
        try:
            await check_cluster_mode_async(client, settings_for(url))
        finally:
            await client.aclose()

    with pytest.raises(SettingsError, match="Redis Cluster"):
        asyncio.run(check_async(cluster_node.url))
    asyncio.run(check_async(redis_server.url))


def test_every_component_refuses_a_cluster_node_at_start_without_redis_cluster(
    cluster_node: RedisServer, tmp_path: Path
) -> None:
    env = Stack(cluster_node, tmp_path).env
    commands = {
        "worker": [str(VENV_BIN / "dramatiq"), "app.actors", "--processes", "1", "--threads", "1"],
        "scheduler": [str(VENV_BIN / "periodiq"), "app.actors"],
        "producer": [sys.executable, "-m", "app.producer", "--generate", "1", "--job", "emailJob"],
        "cleanup": [sys.executable, "-m", "app.outcomes.cleanup"],
        "api": [str(VENV_BIN / "uvicorn"), "app.http:app", "--host", "127.0.0.1", "--port", str(free_port())],
    }
    for name, command in commands.items():
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        output = done.stdout + done.stderr
        assert done.returncode != 0, (name, output[-2000:])
        assert REFUSED in output, (name, output[-2000:])
    with cluster_node.client() as client:
        assert client.dbsize() == 0  # nothing was written
