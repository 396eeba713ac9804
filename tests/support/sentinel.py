"""A private Redis Sentinel deployment for tests: one master, replicas and sentinels, each a real
redis-server on a free loopback port (`redis-server --sentinel` for the sentinels).

Every wait polls a condition until a deadline; nothing binds a fixed port.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from tests.support.services import free_port, redis_server_binary, wait_until

MASTER_NAME = "tqmaster"


class Node:
    """One redis-server (a data node or a sentinel) of the deployment."""

    def __init__(self, name: str, directory: Path, args: list[str], password: str) -> None:
        self.name = name
        self.directory = directory
        self.port = free_port()
        self.password = password
        directory.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=5,
            socket_connect_timeout=2,
            **kwargs,
        )

    def start(self) -> None:
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the host dying, nothing flushed or handed over."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=20)

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


class SentinelDeployment:
    """A master, `replicas` replicas of it and `sentinels` sentinels watching it (quorum: a majority).

    The data nodes require `password` (`requirepass` and `masterauth`), the sentinels
    `sentinel_password`."""

    def __init__(
        self,
        directory: Path,
        *,
        replicas: int = 2,
        sentinels: int = 3,
        password: str = "data-secret",
        sentinel_password: str = "sentinel-secret",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.directory = directory
        self.password = password
        self.sentinel_password = sentinel_password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.data: list[Node] = []
        for n in range(1 + replicas):
            self.data.append(Node(f"redis{n}", directory / f"redis{n}", [], password))
        master_port = self.data[0].port
        for n, node in enumerate(self.data):
            node.args = self._data_args(node, None if n == 0 else master_port)
        self.sentinels: list[Node] = []
        for n in range(sentinels):
            node = Node(f"sentinel{n}", directory / f"sentinel{n}", [], sentinel_password)
            node.args = self._sentinel_args(node, master_port, quorum=sentinels // 2 + 1)
            self.sentinels.append(node)

    def _data_args(self, node: Node, replica_of: int | None) -> list[str]:
        args = [
            redis_server_binary(),
            "--port", str(node.port),
            "--bind", "127.0.0.1",
            "--dir", str(node.directory),
            "--save", "",
            "--appendonly", "no",
            "--requirepass", self.password,
            "--masterauth", self.password,
            # A new replica syncs at once (the default waits 5 s for others to share the transfer).
            "--repl-diskless-sync-delay", "0",
            "--logfile", str(node.directory / "redis.log"),
        ]  # fmt: skip
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        return args

    def _sentinel_args(self, node: Node, master_port: int, *, quorum: int) -> list[str]:
        # A sentinel rewrites its config file as it learns the deployment: one file of its own.
        config = node.directory / "sentinel.conf"
        config.write_text(
            "\n".join(
                [
                    f"port {node.port}",
                    "bind 127.0.0.1",
                    f"dir {node.directory}",
                    f"logfile {node.directory / 'redis.log'}",
                    f"requirepass {self.sentinel_password}",
                    f"sentinel sentinel-pass {self.sentinel_password}",
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {quorum}",
                    f"sentinel auth-pass {MASTER_NAME} {self.password}",
                    f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
                    f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}",
                    f"sentinel parallel-syncs {MASTER_NAME} {len(self.data)}",
                    "",
                ]
            )
        )
        return [redis_server_binary(), str(config), "--sentinel"]

    @property
    def url(self) -> str:
        """REDIS_URL with sentinels: only the database (the sentinels name the host)."""
        return "redis:///0"

    @property
    def sentinel_addresses(self) -> str:
        """REDIS_SENTINELS for this deployment."""
        return ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)

    def env(self) -> dict[str, str]:
        """The settings that point a process at this deployment."""
        return {
            "REDIS_SENTINELS": self.sentinel_addresses,
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
            "REDIS_SENTINEL_PASSWORD": self.sentinel_password,
            "REDIS_PASSWORD": self.password,
            "REDIS_URL": self.url,
        }

    def start(self) -> SentinelDeployment:
        for node in self.data:
            node.start()
        for node in self.data:
            wait_until(lambda node=node: node.client().ping(), timeout=20, message=f"{node.name} to answer")
        for node in self.data[1:]:
            wait_until(
                lambda node=node: node.client().info("replication").get("master_link_status") == "up",
                timeout=20,
                message=f"{node.name} to sync with the master",
            )
        for node in self.sentinels:
            node.start()
        # Before any failover can be trusted: every sentinel knows every replica and the others.
        for node in self.sentinels:
            wait_until(
                lambda node=node: self._knows_all(node), timeout=30, message=f"{node.name} to discover the deployment"
            )
        return self

    def _knows_all(self, sentinel: Node) -> bool:
        with sentinel.client() as client:
            state = client.sentinel_master(MASTER_NAME)
        return bool(
            int(state["num-slaves"]) == len(self.data) - 1
            and int(state["num-other-sentinels"]) == len(self.sentinels) - 1
        )

    def master_port(self) -> int | None:
        """The master's port as a majority of the live sentinels report it (None while they disagree)."""
        ports = []
        for node in self.sentinels:
            if not node.alive():
                continue
            with contextlib.suppress(redis.RedisError), node.client() as client:
                _, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                ports.append(int(port))
        live = [node for node in self.sentinels if node.alive()]
        for port in set(ports):
            if ports.count(port) > len(live) // 2:
                return port
        return None

    def master(self) -> Node:
        port = self.master_port()
        found = [node for node in self.data if node.port == port]
        assert found, f"no data node on the master's port {port}"
        return found[0]

    def wait_for_new_master(self, old: Node, *, timeout: float = 30) -> Node:
        """Once the sentinels report another node as master and it answers as one."""

        def promoted() -> Node | None:
            port = self.master_port()
            if port is None or port == old.port:
                return None
            node = next(node for node in self.data if node.port == port)
            with node.client() as client:
                return node if client.info("replication")["role"] == "master" else None

        return wait_until(promoted, timeout=timeout, interval=0.05, message="the sentinels to promote a replica")

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data]:
            node.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {node.name} ---\n{node.log()[-3000:]}" for node in [*self.data, *self.sentinels])


@contextlib.contextmanager
def running_sentinels(directory: Path, **kwargs: Any) -> Iterator[SentinelDeployment]:
    deployment = SentinelDeployment(directory, **kwargs)
    try:
        yield deployment.start()
    finally:
        deployment.stop()
