"""What REDIS_WAIT_REPLICAS costs enqueue: POST /enqueue under wrk, one uvicorn worker, against a
master with one replica (both on loopback), with REDIS_WAIT_REPLICAS=0 and 1.
`python -m bench.replicas` (about 30 s); the figures are in README's "Redis Sentinel"."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, cast

from bench.context import Context
from bench.enqueue import Load, _wrk, email_job
from tests.support.sentinel import running_sentinels
from tests.support.services import RedisServer


def measure(seconds: float = 4.0, connections: tuple[int, ...] = (1, 64)) -> list[dict[str, Any]]:
    """Requests/s and latency of POST /enqueue for each REDIS_WAIT_REPLICAS (0, 1) and load."""
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp,
        running_sentinels(Path(tmp) / "redis", replicas=1, sentinels=0) as deployment,
    ):
        context = Context(redis=cast(RedisServer, deployment.data[0]), tmp=Path(tmp))
        body = Path(tmp) / "body.json"
        body.write_text(json.dumps(email_job(1)))
        try:
            for wait in (0, 1):
                context.flush()
                server, base = context.uvicorn("app.http:app", REDIS_WAIT_REPLICAS=str(wait))
                try:
                    for count in connections:
                        _wrk(base + "/enqueue", body, Load(seconds=1.0, connections=count))  # warm-up
                        result = _wrk(base + "/enqueue", body, Load(seconds=seconds, connections=count))
                        rows.append({"wait_replicas": wait, "connections": count, **result})
                finally:
                    context.stop(server)
        finally:
            context.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each wrk run")
    args = parser.parse_args(argv)
    print("REDIS_WAIT_REPLICAS  connections  requests/s    p50 ms    p99 ms  errors")
    for row in measure(args.seconds):
        print(
            f"{row['wait_replicas']:>19}  {row['connections']:>11}  {row['requests_per_s']:>10,.0f}  "
            f"{row['p50_ms']:>8}  {row['p99_ms']:>8}  {row['errors']:>6}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
