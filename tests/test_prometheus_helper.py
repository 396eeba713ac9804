"""The private-Prometheus test helper scrapes a real exporter and answers queries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from tests.support.prometheus import PrometheusServer


@pytest.fixture
def exporter() -> Iterator[str]:
    """A /metrics endpoint on a free loopback port serving `helper_selftest_total`; yields host:port."""
    registry = CollectorRegistry()
    counter = Counter("helper_selftest", "Self-test counter.", ["job"], registry=registry)
    counter.labels(job="emailJob").inc(3)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_scrapes_and_queries(exporter: str) -> None:
    with PrometheusServer({"worker": [exporter]}) as prometheus:
        [series] = prometheus.wait_for_data("helper_selftest_total")
        assert float(series["value"][1]) == 3.0
        # honor_labels, as in deploy/prometheus.yml: the exported `job` label wins.
        assert series["metric"]["job"] == "emailJob"
        assert "exported_job" not in series["metric"]
        [up] = prometheus.query("up")
        assert up["metric"]["job"] == "worker"
        assert up["value"][1] == "1"
