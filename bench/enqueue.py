"""Enqueue throughput: POST /enqueue under concurrent clients (wrk) beside a trivial and a naive
endpoint, POST /enqueue/batch with 1,000 jobs per request, and the producer's bulk rate."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.jobs import DEFAULT_QUEUE
from app.keys import Keys
from bench.context import API_KEY, ROOT, Context

WRK_SCRIPT = Path(__file__).with_name("post.lua")
OUR_API = "app.http:app"
TRIVIAL_API = "bench.apps:trivial"
NAIVE_API = "bench.apps:naive"


@dataclass(frozen=True)
class Load:
    """A wrk run: duration, open connections, threads."""

    seconds: float
    connections: int
    threads: int = 1


def email_job(number: int) -> dict[str, Any]:
    return {
        "jobName": "emailJob",
        "data": {"email": f"user{number}@example.com", "subject": f"Demo #{number}", "body": "Sent by wrk."},
    }


def post_rate(context: Context, app: str, body: Any, load: Load, path: str = "/enqueue") -> dict[str, Any]:
    """Requests/s and latency percentiles of POSTs to `path` on one uvicorn worker serving `app`."""
    context.flush()
    server, base = context.uvicorn(app)
    body_file = context.tmp / f"body-{abs(hash(app))}-{len(json.dumps(body))}.json"
    body_file.write_text(json.dumps(body))
    try:
        # A short warm-up: the first requests of a fresh process pay for imports and connections.
        _wrk(base + path, body_file, Load(seconds=min(1.0, load.seconds), connections=load.connections))
        result = _wrk(base + path, body_file, load)
    finally:
        context.stop(server)
    return result


def _wrk(url: str, body_file: Path, load: Load) -> dict[str, Any]:
    args = [
        "wrk", f"-t{load.threads}", f"-c{load.connections}", f"-d{max(1, round(load.seconds))}s",
        "--timeout", "10s", "--latency", "-s", str(WRK_SCRIPT), url,
    ]  # fmt: skip
    env = {"BENCH_BODY": str(body_file), "BENCH_API_KEY": API_KEY, "PATH": "/usr/bin:/bin"}
    output = subprocess.run(args, capture_output=True, text=True, timeout=load.seconds + 60, env=env).stdout
    return parse_wrk(output)


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, p50/p99 (ms) and error counts from wrk's output with --latency."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not rate:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    result: dict[str, Any] = {"requests_per_s": round(float(rate.group(1)), 1)}
    for percent in (50, 99):
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        result[f"p{percent}_ms"] = round(_to_ms(float(match.group(1)), match.group(2)), 2) if match else None
    requests = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result["requests"] = int(requests.group(1)) if requests else 0
    result["errors"] = (int(non_2xx.group(1)) if non_2xx else 0) + (
        sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    )
    return result


def _to_ms(value: float, unit: str) -> float:
    return {"us": value / 1000, "ms": value, "s": value * 1000}[unit]


def producer_rate(context: Context, jobs: int, runs: int = 1) -> dict[str, Any]:
    """`python -m app.producer --generate N --job emailJob`: its own jobs/s figure (imports
    excluded), the median of `runs` runs."""
    results = sorted((_producer_run(context, jobs) for _ in range(runs)), key=lambda result: result["jobs_per_s"])
    return {**results[len(results) // 2], "runs": [result["jobs_per_s"] for result in results]}


def _producer_run(context: Context, jobs: int) -> dict[str, Any]:
    context.flush()
    result = subprocess.run(
        [sys.executable, "-m", "app.producer", "--generate", str(jobs), "--job", "emailJob", "--quiet"],
        env=context.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    match = re.search(r"(\d+) enqueued.* in ([\d.]+)s \(([\d,]+) jobs/s\)", result.stdout)
    if result.returncode != 0 or not match:
        raise RuntimeError(f"producer failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    enqueued = int(match.group(1))
    queued = context.client.llen(Keys(namespace=context.settings.namespace).queue(DEFAULT_QUEUE))
    if queued != enqueued:
        raise RuntimeError(f"the producer reported {enqueued} jobs but {queued} are queued")
    return {"jobs_per_s": float(match.group(3).replace(",", "")), "jobs": enqueued, "seconds": float(match.group(2))}


def batch_body(size: int) -> dict[str, Any]:
    return {"jobs": [email_job(number) for number in range(size)]}
