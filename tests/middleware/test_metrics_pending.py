"""Worker metric updates added up in memory (app/middleware/metrics.py) equal the direct ones."""

from __future__ import annotations

import prometheus_client as prom

from app.middleware.metrics import DURATION_BUCKETS, PendingUpdates


def metrics() -> tuple[prom.CollectorRegistry, prom.Counter, prom.Gauge, prom.Histogram]:
    registry = prom.CollectorRegistry()
    counter = prom.Counter("done", "", ("job",), registry=registry)
    gauge = prom.Gauge("running", "", ("job",), registry=registry)
    histogram = prom.Histogram("took", "", ("job",), buckets=DURATION_BUCKETS, registry=registry)
    return registry, counter, gauge, histogram


def samples(registry: prom.CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")  # when each series was made: differs by design
    }


def test_written_updates_equal_direct_ones() -> None:
    direct, pending_registry = metrics(), metrics()
    pending = PendingUpdates()
    values = [0.0, 0.004, 0.005, 0.0051, 0.3, 1.0, 7.5, 42.0, 1e6, *DURATION_BUCKETS]
    for job in ("a", "b"):
        for value in values:
            direct[1].labels(job).inc()
            direct[2].labels(job).inc()
            direct[3].labels(job).observe(value)
            pending.add(pending_registry[1].labels(job), 1)
            pending.add(pending_registry[2].labels(job), 1)
            pending.observe(pending_registry[3].labels(job), value)
        direct[2].labels(job).dec(3)
        pending.add(pending_registry[2].labels(job), -3)
    assert samples(pending_registry[0]) != samples(direct[0])  # nothing written yet
    pending.write()
    assert samples(pending_registry[0]) == samples(direct[0])
    pending.write()  # nothing more to write
    assert samples(pending_registry[0]) == samples(direct[0])
