"""The benchmark (bench/run.py) in its tiny configuration: it runs, prints its table and writes every
figure. Whether the targets are met is the benchmark's business, not the test suite's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make system-deps installs it)"),
]


def test_quick_benchmark_prints_the_table_and_writes_every_figure(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    headings = (
        "## Worker throughput",
        "## Flow control: worker throughput",
        "## Flow control: a high job behind a backlog",
        "## Enqueue throughput",
        "## Enqueue-to-start latency",
        "## Redis per finished job",
        "## Targets",
    )
    for heading in headings:
        assert heading in result.stdout, result.stdout
    assert "PASS" in result.stdout or "FAIL" in result.stdout

    document = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "latest.md").read_text().startswith("# Benchmark results")

    machine = document["machine"]
    for name in ("date", "cpu_model", "cpu_cores", "memory_gib", "python", "redis_server", "dramatiq", "wrk"):
        assert machine[name], name

    figures = document["figures"]
    assert figures["workers"], "no worker configuration measured"
    for config, row in figures["workers"].items():
        for name in ("ours", "plain_default", "plain_same_prefetch"):
            assert row[name] > 0, (config, name, row)
            assert row["cpu_us_per_job"][name] > 0, (config, name, row)
        assert row["ratio_default"] > 0 and row["ratio_same_prefetch"] > 0, row

    flow = figures["flow"]
    for name in ("plain", "flow", "priorities_only", "limit_only", "bound"):
        assert flow[name] > 0 and flow["cpu_us_per_job"][name] > 0, (name, flow)
    assert flow["ratio"] > 0 and flow["concurrency"] > flow["bound_concurrency"], flow

    kept = figures["memory"]
    # Every job ran to success, and what each keeps is a positive, sane figure (the target itself
    # is met in `make bench`'s 20,000-job run, not in this tiny one, which the fixed costs dominate).
    assert kept["jobs"] > 0 and 100 < kept["records_bytes_per_job"] < 2_000, kept
    assert kept["bytes_per_job"] >= kept["records_bytes_per_job"] > 0, kept
    assert kept["redis_cpu_us_per_job"] > 0 and kept["jobs_per_redis_core_s"] > 0, kept
    assert set(kept["capacity"]) == {"10 jobs/s", "100 jobs/s", "1000 jobs/s"}, kept

    backlog = figures["backlog"]
    for case in ("resumed", "busy"):
        row = backlog[case]
        assert row["backlog"] > 0 and row["runs"], (case, row)
        assert 0 < row["p50_ms"] <= row["max_ms"], (case, row)
        # The high job started before most of the backlog, whatever the machine's speed.
        assert 0 <= row["started_before_max"] < row["backlog"] / 2, (case, row)

    enqueue = figures["enqueue"]
    for name in ("trivial", "naive", "ours"):
        assert enqueue[name]["requests_per_s"] > 0, (name, enqueue[name])
        assert enqueue[name]["p50_ms"] is not None and enqueue[name]["p99_ms"] is not None, enqueue[name]
        assert enqueue[name]["errors"] == 0, (name, enqueue[name])
    assert enqueue["ratio_to_naive"] > 0 and enqueue["ratio_to_ceiling"] > 0
    assert enqueue["batch"]["jobs_per_s"] > 0 and enqueue["batch"]["errors"] == 0, enqueue["batch"]
    assert enqueue["producer"]["jobs_per_s"] > 0, enqueue["producer"]

    latency = figures["latency"]
    for name in ("ours_idle", "ours_load", "plain_idle"):
        assert latency[name]["samples"] > 0, (name, latency[name])
        assert 0 < latency[name]["p50_ms"] <= latency[name]["p99_ms"], (name, latency[name])
    assert latency["ours_load"]["load_jobs_per_s"] > 0

    targets = {target["name"]: target for target in document["targets"]}
    # Per worker configuration 2; idle latency 2, enqueue 3; flow control 1, the high job 2; memory 1.
    assert len(targets) == 2 * len(figures["workers"]) + 9, sorted(targets)
    for target in targets.values():
        assert target["value"] is not None and isinstance(target["pass"], bool), target
