"""The results: targets checked, a table printed, and latest.json / latest.md written."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKER_RATIO_DEFAULT = 1.0
WORKER_RATIO_SAME_PREFETCH = 0.85
IDLE_P50_MS = 5.0
IDLE_P99_MS = 20.0
API_RATIO_TO_NAIVE = 2.0
BULK_JOBS_PER_S = 15_000
#: Throughput with priorities and a (never binding) concurrency limit over without (issue 14).
FLOW_RATIO = 0.95
#: Redis memory a finished job keeps, its record and index entries included (issue 15).
BYTES_PER_JOB = 400


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    goal: str
    met: bool

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "goal": self.goal, "pass": self.met}


def ratio(ours: float | None, other: float | None) -> float | None:
    return round(ours / other, 2) if ours is not None and other else None


def targets(figures: dict[str, Any]) -> list[Target]:
    """Every target of issue 7 that the figures measured, PASS or FAIL."""
    found: list[Target] = []

    def check(name: str, value: float | None, goal: str, test: Callable[[float], bool]) -> None:
        found.append(Target(name, value, goal, value is not None and test(value)))

    for config, row in figures.get("workers", {}).items():
        check(
            f"worker {config}: ours / plain (default prefetch)",
            row["ratio_default"],
            f">= {WORKER_RATIO_DEFAULT}",
            lambda v: v >= WORKER_RATIO_DEFAULT,
        )
        check(
            f"worker {config}: ours / plain (same prefetch)",
            row["ratio_same_prefetch"],
            f">= {WORKER_RATIO_SAME_PREFETCH}",
            lambda v: v >= WORKER_RATIO_SAME_PREFETCH,
        )
    flow = figures.get("flow")
    if flow:
        check(
            f"flow control {flow['config']}: priorities + concurrency limit / plain (jobs/s)",
            flow["ratio"],
            f">= {FLOW_RATIO}",
            lambda v: v >= FLOW_RATIO,
        )
    for case, row in figures.get("backlog", {}).items():
        limit = row["started_before_limit"]
        check(
            f"high job behind {row['backlog']:,} ({case}): backlog jobs started before it (most of "
            f"{len(row['runs'])} runs)",
            row["started_before_max"],
            f"<= {limit}",
            lambda v, limit=limit: v <= limit,
        )
    kept = figures.get("memory")
    if kept:
        check(
            f"Redis memory per finished job (bytes, {kept['jobs']:,} emailJobs)",
            kept["bytes_per_job"],
            f"<= {BYTES_PER_JOB}",
            lambda v: v <= BYTES_PER_JOB,
        )
    idle = figures.get("latency", {}).get("ours_idle")
    if idle:
        check("idle enqueue-to-start p50 (ms)", idle["p50_ms"], f"<= {IDLE_P50_MS}", lambda v: v <= IDLE_P50_MS)
        check("idle enqueue-to-start p99 (ms)", idle["p99_ms"], f"<= {IDLE_P99_MS}", lambda v: v <= IDLE_P99_MS)
    enqueue = figures.get("enqueue", {})
    if "ours" in enqueue:
        check(
            "POST /enqueue: ours / naive (req/s)",
            enqueue["ratio_to_naive"],
            f">= {API_RATIO_TO_NAIVE}",
            lambda v: v >= API_RATIO_TO_NAIVE,
        )
    if "batch" in enqueue:
        check(
            "POST /enqueue/batch (jobs/s)",
            enqueue["batch"]["jobs_per_s"],
            f">= {BULK_JOBS_PER_S:,}",
            lambda v: v >= BULK_JOBS_PER_S,
        )
    if "producer" in enqueue:
        check(
            "producer --generate (jobs/s)",
            enqueue["producer"]["jobs_per_s"],
            f">= {BULK_JOBS_PER_S:,}",
            lambda v: v >= BULK_JOBS_PER_S,
        )
    return found


def markdown(machine: dict[str, Any], settings: dict[str, Any], figures: dict[str, Any], found: list[Target]) -> str:
    """The whole report as Markdown tables (also what is printed)."""
    lines = [
        "# Benchmark results",
        "",
        f"{machine['date']} on {machine['cpu_model']}, {machine['cpu_cores']} cores, {machine['memory_gib']} GiB; "
        f"Python {machine['python']}, Redis {machine['redis_server']}, Dramatiq {machine['dramatiq']}, "
        f"redis-py {machine['redis_py']}, uvicorn {machine['uvicorn']}. Load average at start: "
        f"{', '.join(str(x) for x in machine['load_average_at_start'])}.",
        "",
    ]
    workers = figures.get("workers")
    if workers:
        lines += [
            f"## Worker throughput (no-op jobs/s; ours = every middleware, prefetch {settings['worker_prefetch']}; "
            f"mean of {settings['plan']['repeats']} runs each, taken in turn)",
            "",
            "| processes x threads | ours | plain Dramatiq (default prefetch) | ratio | "
            f"plain Dramatiq (prefetch {settings['worker_prefetch']}) | ratio |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for config, row in workers.items():
            lines.append(
                f"| {config} | {_n(row['ours'])} | {_n(row['plain_default'])} | {_mark(found, config, 'default')} | "
                f"{_n(row['plain_same_prefetch'])} | {_mark(found, config, 'same prefetch')} |"
            )
        lines += [
            "",
            "CPU per job (µs, worker processes + redis-server; less disturbed by other load than the rates):",
            "",
            "| processes x threads | ours | plain (default prefetch) | plain (same prefetch) |",
            "|---|---:|---:|---:|",
        ]
        for config, row in workers.items():
            cpu = row["cpu_us_per_job"]
            lines.append(f"| {config} | {cpu['ours']} | {cpu['plain_default']} | {cpu['plain_same_prefetch']} |")
        lines.append("")
    lines += _flow_lines(figures, found, settings)
    enqueue = figures.get("enqueue")
    if enqueue:
        lines += [
            "## Enqueue throughput (one uvicorn worker each; wrk "
            f"{settings['wrk_connections']} connections, {settings['wrk_seconds']} s; mean of "
            f"{settings['plan']['enqueue_repeats']} runs each, taken in turn)",
            "",
            "| endpoint | requests/s | p50 ms | p99 ms | errors | note |",
            "|---|---:|---:|---:|---:|---|",
        ]
        references = (("trivial", "trivial JSON endpoint (ceiling)"), ("naive", "naive: Starlette + actor.send()"))
        for key, label in references:
            if key in enqueue:
                row = enqueue[key]
                lines.append(
                    f"| {label} | {_n(row['requests_per_s'])} | {row['p50_ms']} | {row['p99_ms']} | {row['errors']} | |"
                )
        if "ours" in enqueue:
            row = enqueue["ours"]
            note = (
                f"{_x(enqueue['ratio_to_naive'])} naive {_verdict(found, 'POST /enqueue: ours')}; "
                f"{_x(enqueue['ratio_to_ceiling'])} ceiling"
            )
            lines.append(
                f"| ours: POST /enqueue | {_n(row['requests_per_s'])} | {row['p50_ms']} | {row['p99_ms']} | "
                f"{row['errors']} | {note} |"
            )
        lines.append("")
        lines += ["| bulk enqueue | jobs/s | target |", "|---|---:|---|"]
        if "batch" in enqueue:
            row = enqueue["batch"]
            lines.append(
                f"| POST /enqueue/batch ({row['jobs_per_request']} jobs/request, p50 {row['p50_ms']} ms, "
                f"{row['errors']} errors, mean of {len(row.get('runs', [row]))} runs) | {_n(row['jobs_per_s'])} | "
                f"{_verdict(found, 'POST /enqueue/batch')} |"
            )
        if "producer" in enqueue:
            row = enqueue["producer"]
            lines.append(
                f"| producer --generate {row['jobs']} --job emailJob (median of {len(row['runs'])} runs) | "
                f"{_n(row['jobs_per_s'])} | "
                f"{_verdict(found, 'producer')} |"
            )
        lines.append("")
    latency = figures.get("latency")
    if latency:
        lines += [
            "## Enqueue-to-start latency (ms, measured in the worker)",
            "",
            "| case | p50 | p99 | max | samples | target |",
            "|---|---:|---:|---:|---:|---|",
        ]
        labels = {
            "ours_idle": "ours, idle worker (jobs 100-200 ms apart)",
            "ours_load": "ours, under load ({load:,} no-op jobs/s)",
            "plain_idle": "plain Dramatiq, idle worker (for comparison)",
        }
        for key, label in labels.items():
            if key in latency:
                row = latency[key]
                verdict = (
                    f"p50 {_verdict(found, 'idle enqueue-to-start p50')}, "
                    f"p99 {_verdict(found, 'idle enqueue-to-start p99')}"
                    if key == "ours_idle"
                    else ""
                )
                lines.append(
                    f"| {label.format(load=row['load_jobs_per_s'])} ({row['config']}) | {row['p50_ms']} | "
                    f"{row['p99_ms']} | {row['max_ms']} | {row['samples']} | {verdict} |"
                )
        lines.append("")
    lines += _memory_lines(figures, found)
    passed = sum(1 for target in found if target.met)
    lines += [f"## Targets: {passed} of {len(found)} met", "", "| target | value | goal | |", "|---|---:|---|---|"]
    for target in found:
        lines.append(f"| {target.name} | {target.value} | {target.goal} | {'PASS' if target.met else 'FAIL'} |")
    lines.append("")
    return "\n".join(lines)


def _memory_lines(figures: dict[str, Any], found: list[Target]) -> list[str]:
    """What one Redis carries (issue 15): memory and CPU per finished job, and the capacity table."""
    kept = figures.get("memory")
    if not kept:
        return []
    lines = [
        f"## Redis per finished job ({kept['jobs']:,} emailJobs from the producer, run by `dramatiq app.actors` "
        f"{kept['workers']} in {kept['run_s']} s)",
        "",
        "| figure | value | target |",
        "|---|---:|---|",
        f"| memory kept per finished job (INFO used_memory after - before) | {kept['bytes_per_job']} B | "
        f"{_verdict(found, 'Redis memory per finished job')} |",
        f"| of which the packed records themselves (freed when their buckets are deleted) | "
        f"{kept['records_bytes_per_job']} B | |",
        f"| Redis CPU per job over the enqueue and the run (INFO cpu; run at {_n(kept['jobs_per_s'])} jobs/s) | "
        f"{kept['redis_cpu_us_per_job']} µs | |",
        f"| of which the enqueue (the producer's batches) | {kept['redis_enqueue_cpu_us_per_job']} µs | |",
        f"| Redis CPU with the workers idle (their polls and heartbeats) | {kept['redis_idle_cpu_ms_per_s']} ms/s | |",
        f"| Redis CPU per job, the idle part taken off | {kept['redis_job_cpu_us_per_job']} µs | |",
        f"| jobs/s one Redis core carries (1 / the line above) | {_n(kept['jobs_per_redis_core_s'])} | |",
        "",
        "Commands per job (INFO commandstats; those the Lua scripts call included): "
        + ", ".join(f"{name} {n}" for name, n in kept["calls_per_job"].items())
        + ".",
        "",
        "Capacity: Redis memory for the finished jobs kept (GB, at the figure above):",
        "",
        "| jobs/s | " + " | ".join(next(iter(kept["capacity"].values()))) + " |",
        "|---|" + "---:|" * len(next(iter(kept["capacity"].values()))),
    ]
    for rate, row in kept["capacity"].items():
        lines.append(f"| {rate} | " + " | ".join(f"{gb} GB" for gb in row.values()) + " |")
    lines.append("")
    full_speed = _redis_run_cpu(figures)
    if full_speed:
        config, run_us = full_speed
        total = kept["redis_enqueue_cpu_us_per_job"] + run_us
        lines += [
            f"At full speed Redis spends less per job (more jobs per round trip): {run_us} µs per no-op job run "
            f"by our {config} worker (the worker throughput section, median) plus "
            f"{kept['redis_enqueue_cpu_us_per_job']} µs per job enqueued by the producer: {total:.1f} µs, "
            f"about {_n(1e6 / total)} jobs/s on one Redis core.",
            "",
        ]
    return lines


def _redis_run_cpu(figures: dict[str, Any]) -> tuple[str, float] | None:
    """Redis's CPU per job run at full speed: the median of our runs in the worker section (2x8 if
    measured)."""
    workers = figures.get("workers") or {}
    config = "2x8" if "2x8" in workers else next(iter(workers), None)
    if config is None:
        return None
    runs = [run["redis_cpu_us_per_job"] for run in workers[config]["runs"]["ours"] if run.get("redis_cpu_us_per_job")]
    return (config, round(statistics.median(runs), 1)) if runs else None


def _flow_lines(figures: dict[str, Any], found: list[Target], settings: dict[str, Any]) -> list[str]:
    """The flow-control sections (issue 14): throughput with and without, a high job behind a backlog."""
    lines: list[str] = []
    flow = figures.get("flow")
    if flow:
        cpu = flow["cpu_us_per_job"]
        lines += [
            f"## Flow control: worker throughput (ours {flow['config']}, no-op jobs/s; median of "
            f"{len(flow['runs']['plain'])} runs each, taken in turn)",
            "",
            "| configuration | jobs/s | CPU µs/job | vs plain | target |",
            "|---|---:|---:|---:|---|",
            f"| plain: one job type, normal priority, no limits | {_n(flow['plain'])} | {cpu['plain']} | | |",
            f"| flow control: jobs spread over {'/'.join(flow['priorities'])}, type declared with "
            f"concurrency={flow['concurrency']} (never binds) | {_n(flow['flow'])} | {cpu['flow']} | "
            f"{_x(flow['ratio'])} (CPU {_x(flow['cpu_ratio'])}) | {_verdict(found, 'flow control')} "
            f"(>= {FLOW_RATIO}) |",
            f"| priorities only (no limit declared) | {_n(flow['priorities_only'])} | {cpu['priorities_only']} | "
            f"{_x(ratio(flow['priorities_only'], flow['plain']))} | no target |",
            f"| concurrency={flow['concurrency']} only (normal priority) | {_n(flow['limit_only'])} | "
            f"{cpu['limit_only']} | {_x(ratio(flow['limit_only'], flow['plain']))} | no target |",
            f"| flow control with concurrency={flow['bound_concurrency']} (binds: jobs wait for a slot) | "
            f"{_n(flow['bound'])} | {cpu['bound']} | {_x(ratio(flow['bound'], flow['plain']))} | no target |",
            "",
            f"The limit of {flow['concurrency']} is more than the worker runs at once, so the flow-control row "
            "measures the checking (the levels' turns, the slot taken in the fetch, given back with the ack, "
            "renewed by the heartbeat), not waiting for a slot.",
            "",
        ]
    backlog = figures.get("backlog")
    if backlog:
        prefetch = settings.get("worker_prefetch")
        lines += [
            "## Flow control: a high job behind a backlog of normal ones (ours, every middleware)",
            "",
            "| case | backlog | to start, p50 ms | max ms | backlog jobs started before it (median / most) | target |",
            "|---|---:|---:|---:|---:|---|",
        ]
        labels = {
            "resumed": "queued while the queue was paused, then resumed (from the resume)",
            "busy": "enqueued while the worker drains the backlog (from the enqueue)",
        }
        for case, row in backlog.items():
            verdict = _verdict(found, f"high job behind {row['backlog']:,} ({case})")
            lines.append(
                f"| {labels.get(case, case)} ({row['config']}, {len(row['runs'])} runs) | {_n(row['backlog'])} | "
                f"{row['p50_ms']} | {row['max_ms']} | {row['started_before_median']:g} / "
                f"{row['started_before_max']} | {verdict} "
                f"(<= {row['started_before_limit']}) |"
            )
        lines += [
            "",
            f"The rule (prefetch {prefetch} per process): resumed, the high job is in the first fetch after "
            "the resume, so only what the processes take in their first fetches may start before it "
            "(prefetch x processes); busy, what the processes held when it arrived (a prefetch each at "
            "most) and one more fetch each (2 x prefetch x processes). The time from a resume includes the "
            f"start gate's poll of the paused queues (every 100 ms). A normal job enqueued last would wait "
            "for the whole backlog (backlog / jobs per second).",
            "",
        ]
    return lines


def write(out: Path, machine: dict[str, Any], settings: dict[str, Any], figures: dict[str, Any]) -> str:
    """Check the targets, write latest.json and latest.md under `out`; the Markdown report."""
    found = targets(figures)
    text = markdown(machine, settings, figures, found)
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": machine,
        "settings": settings,
        "figures": figures,
        "targets": [target.as_dict() for target in found],
    }
    (out / "latest.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "latest.md").write_text(text)
    return text


def _n(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _find(found: list[Target], prefix: str) -> Target | None:
    return next((target for target in found if target.name.startswith(prefix)), None)


def _verdict(found: list[Target], prefix: str) -> str:
    target = _find(found, prefix)
    return "" if target is None else ("PASS" if target.met else "FAIL")


def _mark(found: list[Target], config: str, kind: str) -> str:
    target = _find(found, f"worker {config}: ours / plain ({kind}")
    if target is None:
        return "n/a"
    return f"{_x(target.value)} {'PASS' if target.met else 'FAIL'} ({target.goal})"
