"""The console's speed (issue 13): with 100,000 job records in Redis, every page at most 50 ms at
p95, and no KEYS or SCAN on a page load (Redis's own command counts say so).

`python -m bench.ui [--quick]` alone, or a section of `make bench`. The app runs in this process
behind httpx's ASGI transport (what is timed: the endpoint, its Redis round trips and the
template; not the HTTP parsing, which is the same for every page)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from app.api.session import COOKIE, FULL, sessions_for
from app.http import create_app
from app.keys import Keys
from app.outcomes.log import OutcomeLog
from app.outcomes.record import FAILED, QUEUED, SUCCEEDED, index_score, now_ms
from app.settings import Settings
from tests.support.services import running_redis

TARGET_P95_MS = 50.0
KEY = "bench-console-key-0123456789"


def seed(client: Any, keys: Keys, records: int) -> str:
    """`records` job records (60 % succeeded, 30 % failed with a traceback, 10 % queued) in their
    indexes, and a day of minute counts; returns the id of a failed job."""
    log = OutcomeLog(keys=keys, retention_seconds=7 * 86_400)
    now = now_ms()
    states = [SUCCEEDED] * 6 + [FAILED] * 3 + [QUEUED]
    pipe = client.pipeline(transaction=False)
    failed_id = ""
    for n in range(records):
        state = states[n % len(states)]
        job_name = ("webhookJob", "emailJob")[n % 2]
        job_id = f"bench-{n:08d}"
        at = now - (records - n) * 5
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
        for index in (keys.state_index(state), keys.state_index(state, job_name), keys.all_index(),
                      keys.all_index(job_name)):  # fmt: skip
            pipe.zadd(index, {job_id: index_score(at)})
        if n % 2_000 == 1_999:
            pipe.execute()
    for minute in range(now // 60_000 - 1439, now // 60_000 + 1):
        pipe.hset(keys.minute_counts(minute), mapping={"succeeded": minute % 97, "retried": minute % 7, "failed": 1})
    pipe.execute()
    assert log.retention_seconds  # the same shapes the outcome log writes
    return failed_id


def _commands(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def _time_pages(settings: Settings, pages: list[str], repeat: int) -> dict[str, dict[str, float]]:
    app = create_app(settings)
    cookie = sessions_for(settings).issue(FULL)
    transport = httpx.ASGITransport(app=app)
    results: dict[str, dict[str, float]] = {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench", cookies={COOKIE: cookie}) as client,
    ):
        for path in pages:
            for _ in range(3):  # warm up
                response = await client.get(path)
                assert response.status_code == 200, (path, response.status_code, response.text[:300])
            times = []
            for _ in range(repeat):
                began = time.perf_counter()
                response = await client.get(path)
                times.append((time.perf_counter() - began) * 1000)
                assert response.status_code == 200, path
            times.sort()
            results[path] = {
                "p50_ms": round(statistics.median(times), 2),
                "p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
                "max_ms": round(times[-1], 2),
            }
    return results


def measure(tmp: Path, *, records: int = 100_000, repeat: int = 100) -> dict[str, Any]:
    """Seed a private Redis, time every console page, and count KEYS and SCAN calls."""
    with running_redis(tmp / "ui-redis") as server:
        settings = Settings(api_key=KEY, redis_url=server.url)
        keys = Keys(namespace=settings.namespace)
        with server.client() as client:
            failed_id = seed(client, keys, records)
            pages = [
                "/ui/", "/ui/live", "/ui/jobs", "/ui/jobs?state=failed", "/ui/jobs?state=succeeded&jobName=emailJob",
                "/ui/jobs?since=1h", "/ui/jobs?state=failed&q=503", "/ui/jobs?queue=default", f"/ui/jobs/{failed_id}",
                "/ui/dead", "/ui/dead?jobName=webhookJob", "/ui/enqueue?jobName=webhookJob", "/docs",
            ]  # fmt: skip
            before = _commands(client)
            pages_ms = asyncio.run(_time_pages(settings, pages, repeat))
            after = _commands(client)
    scans = sum(after.get(name, 0) - before.get(name, 0) for name in ("keys", "scan", "hscan", "zscan", "sscan"))
    worst = max(figures["p95_ms"] for figures in pages_ms.values())
    return {
        "records": records,
        "repeat": repeat,
        "pages": pages_ms,
        "worst_p95_ms": worst,
        "target_p95_ms": TARGET_P95_MS,
        "met": worst <= TARGET_P95_MS and scans == 0,
        "keys_or_scan_calls": scans,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 records, 20 requests per page")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        result = measure(Path(tmp), **({"records": 10_000, "repeat": 20} if args.quick else {}))
    for path, figures in result["pages"].items():
        print(
            f"{path:55} p50 {figures['p50_ms']:7.2f} ms  p95 {figures['p95_ms']:7.2f} ms  "
            f"max {figures['max_ms']:7.2f} ms"
        )
    print(
        f"worst p95 {result['worst_p95_ms']} ms (target {TARGET_P95_MS}); "
        f"KEYS/SCAN calls: {result['keys_or_scan_calls']}"
    )
    print("met" if result["met"] else "NOT met")


if __name__ == "__main__":
    main()
