"""A scripted webhook receiver for tests: per job, answer a list of statuses, hold requests on demand."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from app.delivery.webhooks import DELIVERY_HEADER

Script = Callable[[str, int, str], int]


class ScriptedReceiver:
    """Answers the n-th request (n from 1) of a job, told apart by the delivery header (its jobId),
    with the status `script(job_id, n, path)`. Between hold() and release(), requests wait."""

    def __init__(self, script: Script, *, delay_s: float = 0.0) -> None:
        self.script = script
        self.delay_s = delay_s
        self.requests: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.waiting = 0
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver._answer(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        job_id = handler.headers.get(DELIVERY_HEADER, "")
        with self._lock:
            self.waiting += 1
        self._open.wait(timeout=60)
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._lock:
            self.waiting -= 1
            number = len(self.requests[job_id]) + 1
            status = self.script(job_id, number, handler.path)
            self.requests[job_id].append((time.monotonic(), status))
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def hold(self) -> None:
        """Requests arriving from now on wait (the job stays running) until release()."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def count(self, job_id: str) -> int:
        with self._lock:
            return len(self.requests[job_id])

    def statuses(self, job_id: str) -> list[int]:
        with self._lock:
            return [status for _, status in self.requests[job_id]]

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


def fail_first(n: int, *, then: int = 200, status: int = 500) -> Script:
    """A script: `status` for the first n requests of each job, then `then`."""
    return lambda job_id, number, path: status if number <= n else then
