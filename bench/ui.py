"""The console's speed (issue 13): with 100,000 job records in Redis, every page at most 50 ms at
p95, a bounded number of Redis round trips per page, and no KEYS or SCAN on a page load (Redis's
own command counts say so).

`python -m bench.ui [--quick]` alone, or a section of `make bench`. The app runs in this process
behind httpx's ASGI transport (what is timed: the endpoint, its Redis round trips and the
template; not the HTTP parsing, which is the same for every page). Round trips are counted on the
API's Redis client (each command, or each pipeline, is one send); commands with INFO commandstats."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import redis.asyncio.connection

from app.api.session import COOKIE, FULL, sessions_for
from app.http import create_app
from app.job_ids import new_job_id
from app.keys import Keys
from app.outcomes.log import OutcomeLog
from app.outcomes.record import FAILED, QUEUED, RUNNING, SUCCEEDED, index_score, now_ms
from app.settings import Settings
from tests.support.services import running_redis

TARGET_P95_MS = 50.0
KEY = "bench-console-key-0123456789"


def seed(client: Any, keys: Keys, records: int) -> str:
    """`records` job records (60 % succeeded, 30 % failed with a traceback, 10 % queued) in their
    indexes (the succeeded ones packed by the succeeded script itself, as a worker does), a day of
    minute counts and 4 live workers; returns the id of a failed job."""
    log = OutcomeLog(keys=keys, retention_seconds=7 * 86_400)
    now = now_ms()
    states = [SUCCEEDED] * 6 + [FAILED] * 3 + [QUEUED]
    pipe = client.pipeline(transaction=False)
    failed_id = ""
    for n in range(records):
        state = states[n % len(states)]
        job_name = ("webhookJob", "emailJob")[n % 2]
        at = now - (records - n) * 5
        job_id = new_job_id(at_ms=at - 100)
        fields: dict[str, Any] = {
            "jobId": job_id, "jobName": job_name, "queue": "default", "state": state, "attempts": 1,
            "maxRetries": 5, "enqueuedAt": at - 100, "startedAt": at - 50, "finishedAt": at, "durationMs": 50,
            "data": json.dumps({"url": "https://example.com/hook", "payload": {"n": n}}),
        }  # fmt: skip
        if state == FAILED:
            failed_id = job_id
            fields["error"] = f"HTTPError: 50{n % 4} from https://example.com/hook"
            fields["traceback"] = "Traceback (most recent call last):\n  ...\n" * 20
        pipe.hset(keys.job(job_id), mapping=fields)
        indexed = RUNNING if state == SUCCEEDED else state  # the succeeded script takes it from there
        for index in (keys.state_index(indexed), keys.state_index(indexed, job_name), keys.all_index(),
                      keys.all_index(job_name)):  # fmt: skip
            pipe.zadd(index, {job_id: index_score(at)})
        if state == SUCCEEDED:
            pipe.execute_command(
                *log.succeeded(job_id=job_id, job_name=job_name, duration_ms=50, at_ms=at, queue="default", attempt=1)
            )
        if n % 2_000 == 1_999:
            pipe.execute()
    for n in range(4):  # live workers (their heartbeats an hour ahead), so the overview reads them too
        broker_id = f"bench-worker-{n}"
        pipe.zadd(keys.heartbeats(), {broker_id: now + 3_600_000})
        pipe.hset(keys.workers(), broker_id, json.dumps({"host": "bench", "pid": 100 + n, "ppid": 99, "threads": 8}))
    for minute in range(now // 60_000 - 1439, now // 60_000 + 1):
        pipe.hset(keys.minute_counts(minute), mapping={"succeeded": minute % 97, "retried": minute % 7, "failed": 1})
    pipe.execute()
    assert log.retention_seconds  # the same shapes the outcome log writes
    return failed_id


#: A page: its path, and for a POST its form (the CSRF token is added).
Page = tuple[str, dict[str, str] | None]
SCANS = ("keys", "scan", "hscan", "zscan", "sscan")


def _commands(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


class RoundTrips:
    """Counts the sends of the API's Redis connections (a command, or a whole pipeline, is one)."""

    def __init__(self) -> None:
        self.count = 0
        self._send = redis.asyncio.connection.AbstractConnection.send_packed_command

    def __enter__(self) -> RoundTrips:
        send, counter = self._send, self

        async def counted(connection: Any, command: Any, check_health: bool = True) -> None:
            counter.count += 1
            await send(connection, command, check_health)

        redis.asyncio.connection.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        redis.asyncio.connection.AbstractConnection.send_packed_command = self._send  # type: ignore[method-assign]


async def _time_pages(settings: Settings, redis_client: Any, pages: list[Page], repeat: int) -> dict[str, Any]:
    app = create_app(settings)
    sessions = sessions_for(settings)
    cookie = sessions.issue(FULL)
    csrf = sessions.read(cookie).csrf  # type: ignore[union-attr]
    transport = httpx.ASGITransport(app=app)
    results: dict[str, dict[str, Any]] = {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench", cookies={COOKIE: cookie}) as client,
    ):

        async def load(path: str, form: dict[str, str] | None) -> httpx.Response:
            if form is None:
                return await client.get(path)
            return await client.post(path, data={**form, "csrf": csrf})

        for path, form in pages:
            name = path if form is None else f"POST {path} {urlencode(form)}"
            for _ in range(3):  # warm up
                response = await load(path, form)
                assert response.status_code == 200, (name, response.status_code, response.text[:300])
            times = []
            before = _commands(redis_client)
            with RoundTrips() as trips:
                for _ in range(repeat):
                    began = time.perf_counter()
                    response = await load(path, form)
                    times.append((time.perf_counter() - began) * 1000)
                    assert response.status_code == 200, name
            after = _commands(redis_client)
            commands = sum(n - before.get(c, 0) for c, n in after.items() if c != "info")
            times.sort()
            results[name] = {
                "p50_ms": round(statistics.median(times), 2),
                "p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
                "max_ms": round(times[-1], 2),
                "round_trips": round(trips.count / repeat, 2),
                "redis_commands": round(commands / repeat, 1),
                "keys_or_scan_calls": sum(after.get(c, 0) - before.get(c, 0) for c in SCANS),
            }
    return results


def measure(tmp: Path, *, records: int = 100_000, repeat: int = 100) -> dict[str, Any]:
    """Seed a private Redis, time every console page, and count round trips, commands and KEYS
    and SCAN calls."""
    with running_redis(tmp / "ui-redis") as server:
        settings = Settings(api_key=KEY, redis_url=server.url)
        keys = Keys(namespace=settings.namespace)
        with server.client() as client:
            failed_id = seed(client, keys, records)
            paths = [
                "/ui/", "/ui/live", "/ui/jobs", "/ui/jobs?state=failed", "/ui/jobs?state=succeeded&jobName=emailJob",
                "/ui/jobs?since=1h", "/ui/jobs?state=failed&q=503", "/ui/jobs?q=http", "/ui/jobs?queue=default",
                "/ui/jobs?queue=default&q=no-such-error", f"/ui/jobs/{failed_id}", "/ui/dead",
                "/ui/dead?jobName=webhookJob", "/ui/dead?q=503", "/ui/enqueue?jobName=webhookJob", "/docs",
            ]  # fmt: skip
            pages: list[Page] = [(path, None) for path in paths]
            pages.append(("/ui/dead/confirm", {"action": "retry", "scope": "matching", "q": "503"}))
            load_before = os.getloadavg()
            pages_ms = asyncio.run(_time_pages(settings, client, pages, repeat))
            load_after = os.getloadavg()
    scans = sum(figures["keys_or_scan_calls"] for figures in pages_ms.values())
    worst = max(figures["p95_ms"] for figures in pages_ms.values())
    return {
        "records": records,
        "repeat": repeat,
        "pages": pages_ms,
        "worst_p95_ms": worst,
        "target_p95_ms": TARGET_P95_MS,
        "met": worst <= TARGET_P95_MS and scans == 0,
        "keys_or_scan_calls": scans,
        "overview_refresh_round_trips": pages_ms["/ui/live"]["round_trips"],
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 records, 20 requests per page")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        result = measure(Path(tmp), **({"records": 10_000, "repeat": 20} if args.quick else {}))
    print(f"{result['records']:,} records, {result['repeat']} requests a page; load average {result['load_average']}")
    for path, figures in result["pages"].items():
        print(
            f"{path[:62]:62} p50 {figures['p50_ms']:6.2f} ms  p95 {figures['p95_ms']:6.2f} ms  "
            f"max {figures['max_ms']:6.2f} ms  {figures['round_trips']:g} round trips  "
            f"{figures['redis_commands']:g} commands"
        )
    print(
        f"worst p95 {result['worst_p95_ms']} ms (target {TARGET_P95_MS}); overview refresh: "
        f"{result['overview_refresh_round_trips']:g} round trips; KEYS/SCAN calls: {result['keys_or_scan_calls']}"
    )
    print("met" if result["met"] else "NOT met")


if __name__ == "__main__":
    main()
