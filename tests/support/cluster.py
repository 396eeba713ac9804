"""A private Redis Cluster for tests: masters (and replicas, if asked), each a real redis-server in
cluster mode on a free loopback port, joined by `redis-cli --cluster create`.

Every wait polls a condition until a deadline; nothing binds a fixed port.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from tests.support.services import RedisServer, free_port, redis_binary, wait_until


class ClusterDeployment:
    """`masters` masters, each with `replicas` replicas; the slots spread evenly by redis-cli."""

    def __init__(self, directory: Path, *, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 2000) -> None:
        self.directory = directory
        self.replicas = replicas
        self.nodes: list[RedisServer] = []
        for n in range(masters * (1 + replicas)):
            # The cluster bus port given: by default it is the port plus 10,000, which a free
            # port above 55,535 cannot have (the server then refuses to start).
            args = [
                "--cluster-enabled", "yes",
                "--cluster-port", str(free_port()),
                "--cluster-config-file", str(directory / f"node{n}" / "nodes.conf"),
                "--cluster-node-timeout", str(node_timeout_ms),
            ]  # fmt: skip
            self.nodes.append(RedisServer(directory / f"node{n}", extra_args=args))

    @property
    def url(self) -> str:
        """REDIS_URL: any node (the first); the others are found from it."""
        return self.nodes[0].url

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.url, "REDIS_CLUSTER": "true"}

    def client(self, **kwargs: Any) -> redis.RedisCluster:
        """A cluster client (redis-py's) for the tests' own reads."""
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, socket_timeout=5, **kwargs)

    def start(self) -> ClusterDeployment:
        for node in self.nodes:
            node.start()
        redis_cli = redis_binary("redis-cli")
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [redis_cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for node in self.nodes:
            wait_until(lambda node=node: self._ready(node), timeout=90, message=f"node {node.port} to join")
        return self

    def _ready(self, node: RedisServer) -> bool:
        with node.client() as client:
            info = client.cluster("INFO")
        return bool(info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == len(self.nodes))

    def master_of(self, hash_tag: str) -> int:
        """The port of the master that serves a hash tag's slot."""
        slot = key_slot(hash_tag.encode())
        with self.nodes[0].client() as client:
            for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise AssertionError(f"no master serves slot {slot}")

    def keys_on(self, port: int, pattern: str = "*") -> list[str]:
        node = next(node for node in self.nodes if node.port == port)
        with node.client() as client:
            return sorted(key.decode() for key in client.scan_iter(match=pattern, count=1000))

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(kill=True)


def tags_on_different_masters(deployment: ClusterDeployment, candidates: list[str]) -> tuple[str, str]:
    """Two of `candidates` (queue names) whose hash tags land on different masters."""
    first = candidates[0]
    for other in candidates[1:]:
        if deployment.master_of(other) != deployment.master_of(first):
            return first, other
    raise AssertionError(f"all of {candidates} are on one master")


@contextlib.contextmanager
def running_cluster(directory: Path, **kwargs: Any) -> Iterator[ClusterDeployment]:
    deployment = ClusterDeployment(directory, **kwargs)
    try:
        yield deployment.start()
    finally:
        deployment.stop()
