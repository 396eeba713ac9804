"""A webhook receiver in the test process, whose behaviour is chosen by the URL path.

webhookJob against it is a real job of any duration or outcome, so the fault tests need no
test-only job type: `/ok` answers 200, `/hold` keeps the request open until `release()`,
`/sleep/<ms>` holds it that long, `/fail` answers 500, `/flaky/<n>` answers 500 to the first n
deliveries of a job and then 200, `/crash` calls `on_crash` (the test kills the worker there).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from app.delivery.webhooks import DELIVERY_HEADER

#: Upper bound on any hold, so that a forgotten release never hangs a test.
MAX_HOLD_S = 60.0


@dataclass
class Delivery:
    path: str
    job_id: str
    started: float
    finished: float | None = None
    status: int | None = None


class Receiver:
    """Records every delivery (path, job id from X-Taskqueue-Delivery, start and end times)."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.released = threading.Event()
        self.on_crash: Callable[[Delivery], None] = lambda delivery: None
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                delivery = Delivery(self.path, self.headers.get(DELIVERY_HEADER, ""), time.monotonic())
                with receiver._lock:
                    receiver.deliveries.append(delivery)
                status = receiver._respond(delivery)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    return  # the worker died while the request was held
                delivery.finished, delivery.status = time.monotonic(), status

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def _respond(self, delivery: Delivery) -> int:
        parts = delivery.path.strip("/").split("/")
        kind = parts[0]
        if kind == "hold":
            self.released.wait(MAX_HOLD_S)
        elif kind == "sleep":
            self.released.wait(min(int(parts[1]) / 1000, MAX_HOLD_S))
        elif kind == "fail":
            return 500
        elif kind == "flaky":
            return 500 if self.count(delivery.job_id) <= int(parts[1]) else 200
        elif kind == "crash":
            self.on_crash(delivery)
            # No answer: the worker's processes die while they wait for one.
            self.released.wait(MAX_HOLD_S)
        return 200

    def release(self) -> None:
        """Let every held request (now and later) answer 200."""
        self.released.set()

    def of(self, job_id: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.job_id == job_id]

    def count(self, job_id: str) -> int:
        return len(self.of(job_id))

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
