"""The API's own HTTP metrics: requests by route template, method and status, and latency.

Counted in plain numbers by the event loop's thread, which alone observes, and turned into
metric families at scrape time: prometheus_client's locked, labelled children cost more per
request than the rest of this together.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: A request with this in its query string is a long poll (GET /jobs/{job_id}?wait=...), counted
#: and timed under its route template with LONG_POLL_SUFFIX.
LONG_POLL_PARAMETER = b"wait="
LONG_POLL_SUFFIX = "?wait"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class HttpMetrics(Collector):
    """Requests by route template, method and status; latency by route and method.

    Counted in plain numbers by the event loop's thread, which alone observes, and turned into
    metric families at scrape time: prometheus_client's locked, labelled children cost more per
    request than the rest of this together."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests: dict[tuple[str, str, int], int] = {}
        # Per route and method: a count per bucket (the last one past every bound), then the sum.
        self._latency: dict[tuple[str, str], list[float]] = {}
        registry.register(self)

    def observe(self, route: str, method: str, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        key = (route, method, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        series = self._latency.get((route, method))
        if series is None:
            series = self._latency[(route, method)] = [0] * (len(LATENCY_BUCKETS) + 1) + [0.0]
        series[bisect.bisect_left(LATENCY_BUCKETS, elapsed)] += 1  # the first bucket with elapsed <= bound
        series[-1] += elapsed

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "taskqueue_http_requests", "HTTP requests answered by the API.", labels=("route", "method", "status")
        )
        for (route, method, status), count in list(self._requests.items()):
            requests.add_metric([route, method, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "taskqueue_http_request_duration_seconds", "Time to answer an HTTP request.", labels=("route", "method")
        )
        for (route, method), series in list(self._latency.items()):
            counts = list(series)  # a copy: the loop's thread may be adding to it
            cumulative = list(itertools.accumulate(counts[:-1]))
            buckets = [(floatToGoString(bound), cumulative[i]) for i, bound in enumerate(LATENCY_BUCKETS)]
            buckets.append(("+Inf", cumulative[-1]))
            latency.add_metric([route, method], buckets, sum_value=counts[-1])
        yield latency


class HttpMetricsMiddleware:
    """Counts and times requests by route template (never a raw path or id)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # The router records the route it chose (Starlette >= 0.48); no match means no route.
            route = scope.get("route")
            template = route.path if isinstance(route, Route) else "<unmatched>"
            if LONG_POLL_PARAMETER in scope.get("query_string", b""):
                # A long poll takes seconds by design: timed apart, it does not hide the latency
                # of the route's ordinary reads.
                template += LONG_POLL_SUFFIX
            scope["app"].state.api.http_metrics.observe(template, scope["method"], status, started)
