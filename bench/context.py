"""The benchmark's private world: one redis-server on a free loopback port and the processes it starts."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from app.settings import Settings
from tests.support.services import ROOT, RedisServer, Service, free_port, wait_until

VENV_BIN = Path(sys.executable).parent
API_KEY = "bench-api-key-0123456789"


@dataclass
class Context:
    """Settings and environment shared by every measurement; starts and stops our processes."""

    redis: RedisServer
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)

    def __post_init__(self) -> None:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "API_", "PROMETHEUS_"))}
        inherited.pop("dramatiq_queue_prefetch", None)
        # No recurring jobs: the repository's schedules.toml names production job types, which the
        # benchmark's workers (bench.ours) do not declare; and none may run during a measurement.
        schedules = self.tmp / "schedules.toml"
        schedules.write_text("# none: the benchmark runs no recurring jobs\n")
        self.env = {
            **inherited,
            "REDIS_URL": self.redis.url,
            "API_KEY": API_KEY,
            "METRICS_DIR": str(self.tmp / "metrics"),
            "MBOX_PATH": str(self.tmp / "mail" / "outbox.mbox"),
            "PYTHONUNBUFFERED": "1",
            "SCHEDULES_FILE": str(schedules),
            **self.env,
        }
        self.settings = Settings.from_env(self.env)
        self.client = self.redis.client()

    def flush(self) -> None:
        """Start the next measurement from an empty Redis."""
        self.client.flushall()

    def start(self, name: str, args: list[str], **env: str) -> Service:
        service = Service(name, args, {**self.env, **env}, self.tmp / "logs")
        self.services.append(service)
        return service

    def stop(self, service: Service) -> None:
        service.stop(timeout=30)
        if service in self.services:
            self.services.remove(service)

    def worker(self, module: str, processes: int, threads: int, **env: str) -> Service:
        """`dramatiq <module>` with its metrics port free, once every process is ready."""
        env.setdefault("METRICS_PORT", str(free_port()))
        name = f"{module.rsplit('.', 1)[-1]}-{processes}x{threads}"
        service = self.start(
            name,
            [str(VENV_BIN / "dramatiq"), module, "--processes", str(processes), "--threads", str(threads)],
            **env,
        )
        wait_until(
            lambda: service.log().count("Worker process is ready for action.") >= processes or not service.alive(),
            timeout=60,
            interval=0.05,
            message=f"{name} to boot",
        )
        if not service.alive():
            raise RuntimeError(f"{name} died at start:\n{service.log()[-3000:]}")
        return service

    def uvicorn(self, app: str, **env: str) -> tuple[Service, str]:
        """One uvicorn worker process serving `app`, with the same settings for every app."""
        port = free_port()
        service = self.start(
            app.replace(":", "-").rsplit(".", 1)[-1],
            [str(VENV_BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--no-access-log", "--log-level", "warning"],
            **env,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _listening(port) or not service.alive(), timeout=60, message=f"{app} on port {port}")
        if not service.alive():
            raise RuntimeError(f"{app} died at start:\n{service.log()[-3000:]}")
        return service, base

    def close(self) -> None:
        for service in reversed(self.services):
            service.stop(timeout=30)
        self.services.clear()
        self.client.close()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def private_context(tmp: Path) -> Iterator[Context]:
    """A fresh redis-server (no persistence) and a Context on it; everything is stopped at the end."""
    server = RedisServer(tmp / "redis").start()
    context = Context(redis=server, tmp=tmp)
    try:
        yield context
    finally:
        context.close()
        server.stop(kill=True)


__all__ = ["ROOT", "Context", "private_context", "wait_until"]
