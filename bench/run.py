"""Run the benchmark of issue 7: `python -m bench.run` (or `make bench`); `--quick` for a tiny run.

Everything runs against a private redis-server on a free loopback port, started and stopped
here. The report is printed and written to bench/results/latest.json and latest.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from app.keys import PRIORITY_LEVELS
from bench import enqueue, memory, report, ui
from bench.backlog import CASES, high_behind_backlog
from bench.context import Context, private_context
from bench.keys import CONCURRENCY_ENV, LIMITED_NOOP
from bench.latency import latency
from bench.machine import describe
from bench.workers import OURS, PLAIN, Run, throughput
from tests.support.services import redis_server_binary

T = TypeVar("T")
RESULTS = Path(__file__).with_name("results")
SECTIONS = ("workers", "flow", "enqueue", "latency", "memory", "ui")
#: The module that declares the limited no-op job type (loaded by the workers through JOB_MODULES).
FLOW_MODULE = "bench.flow"


@dataclass(frozen=True)
class Plan:
    """Sizes of every measurement; `full` stays within a few minutes on 2 cores."""

    configs: tuple[str, ...] = ("1x8", "2x8", "2x1")
    #: Enough for the whole window at up to about 18,000 jobs/s (plain Dramatiq reached 14,000).
    worker_jobs: int = 60_000
    warmup_s: float = 1.0
    window_s: float = 3.0
    wrk_seconds: float = 4.0
    wrk_connections: int = 64
    #: The enqueue endpoints' runs are short and many: this machine's speed drifts within a minute.
    enqueue_repeats: int = 3
    batch_size: int = 1_000
    batch_connections: int = 4
    producer_jobs: int = 20_000
    producer_runs: int = 3
    idle_samples: int = 100
    idle_gap_s: tuple[float, float] = (0.1, 0.2)
    load_samples: int = 150
    load_gap_s: tuple[float, float] = (0.02, 0.05)
    plain_idle_samples: int = 50
    latency_config: str = "2x8"
    repeats: int = 3
    #: Flow control (issue 14): throughput with priorities and a concurrency limit against without.
    flow_config: str = "2x8"
    #: A limit no configuration reaches (16 threads at most): the cost of checking it, not of waiting.
    flow_concurrency: int = 1_000
    #: Runs of each flow-control variant: its 5 % target is smaller than this machine's run-to-run
    #: spread (±20 % seen), so more runs, and their median.
    flow_repeats: int = 7
    #: The flow-control runs' window and jobs: longer than the other sections' (3 s), so that the
    #: figure is less at the mercy of a passing second of load (at 7,000 jobs/s a 6 s window
    #: after the warm-up takes about 50,000 jobs).
    flow_window_s: float = 6.0
    flow_jobs: int = 90_000
    #: A limit that binds (a quarter of 2x8's threads), reported without a target.
    bound_concurrency: int = 4
    bound_jobs: int = 20_000
    backlog_jobs: int = 10_000
    backlog_runs: int = 3
    #: Redis memory and CPU per finished job (issue 15): the issue's own measure, 20,000 emailJobs.
    memory_jobs: int = 20_000


QUICK = Plan(
    configs=("1x2",),
    worker_jobs=3_000,
    warmup_s=0.3,
    window_s=0.5,
    wrk_seconds=1.0,
    wrk_connections=8,
    batch_connections=2,
    producer_jobs=1_000,
    producer_runs=1,
    idle_samples=5,
    idle_gap_s=(0.02, 0.05),
    load_samples=5,
    load_gap_s=(0.02, 0.05),
    plain_idle_samples=3,
    latency_config="1x2",
    repeats=1,
    enqueue_repeats=1,
    flow_config="1x2",
    flow_repeats=1,
    flow_window_s=0.5,
    flow_jobs=3_000,
    bound_concurrency=1,
    bound_jobs=3_000,
    backlog_jobs=500,
    backlog_runs=1,
    memory_jobs=1_000,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny configuration (seconds), to check that it works")
    parser.add_argument("--configs", help="worker configurations, e.g. 1x8,2x8,2x1 (processes x threads)")
    parser.add_argument("--only", help=f"comma-separated sections to run: {', '.join(SECTIONS)} (default all)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for latest.json and latest.md")
    args = parser.parse_args(argv)
    args.sections = tuple(args.only.split(",")) if args.only else SECTIONS
    if set(args.sections) - set(SECTIONS):
        parser.error(f"--only takes {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else Plan()
    if args.configs:
        plan = dataclasses.replace(plan, configs=tuple(args.configs.split(",")))
    started = time.monotonic()
    machine = describe(redis_server_binary())
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, private_context(Path(tmp)) as context:
        settings = {
            "quick": args.quick,
            "worker_prefetch": context.settings.worker_prefetch,
            "plan": dataclasses.asdict(plan),
            "wrk_connections": plan.wrk_connections,
            "wrk_seconds": plan.wrk_seconds,
        }
        if "workers" in args.sections:
            figures["workers"] = measure_workers(context, plan)
        if "flow" in args.sections:
            figures["flow"] = measure_flow(context, plan)
            figures["backlog"] = measure_backlog(context, plan)
        if "enqueue" in args.sections:
            figures["enqueue"] = measure_enqueue(context, plan)
        if "latency" in args.sections:
            figures["latency"] = measure_latency(context, plan, figures.get("workers", {}))
        if "memory" in args.sections:
            figures["memory"] = _step("memory per finished job", lambda: memory.measure(context, jobs=plan.memory_jobs))
        if "ui" in args.sections:  # the console's pages with 100,000 records (bench/ui.py)
            figures["ui"] = _step(
                "console pages", lambda: ui.measure(Path(tmp), **({"records": 10_000} if args.quick else {}))
            )
    settings["duration_s"] = round(time.monotonic() - started, 1)
    text = report.write(args.out, machine, settings, figures)
    print(text)
    print(f"written to {args.out / 'latest.json'} and {args.out / 'latest.md'} in {settings['duration_s']} s")
    return 0


def measure_workers(context: Context, plan: Plan) -> dict[str, Any]:
    """Each configuration: ours, plain Dramatiq, plain Dramatiq with our prefetch, taken in turn
    `repeats` times (so that a passing burst of load elsewhere on the machine hits all three)."""
    run = Run(jobs=plan.worker_jobs, warmup_s=plan.warmup_s, window_s=plan.window_s)
    prefetch = str(context.settings.worker_prefetch)
    variants: dict[str, tuple[str, dict[str, str]]] = {
        "ours": (OURS, {}),
        "plain_default": (PLAIN, {}),
        "plain_same_prefetch": (PLAIN, {"dramatiq_queue_prefetch": prefetch}),
    }
    rows: dict[str, Any] = {}
    for config in plan.configs:
        processes, threads = _config(config)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for _ in range(plan.repeats):
            for name, (module, env) in variants.items():
                measure = functools.partial(throughput, context, module, processes, threads, run, **env)
                runs[name].append(_step(f"{name} {config}", measure))
        rate = {name: _mean(result["jobs_per_s"] for result in results) for name, results in runs.items()}
        cpu = {name: _mean(_cpu_per_job(result) for result in results) for name, results in runs.items()}
        rows[config] = {
            **{name: round(value) for name, value in rate.items()},
            "ratio_default": report.ratio(rate["ours"], rate["plain_default"]),
            "ratio_same_prefetch": report.ratio(rate["ours"], rate["plain_same_prefetch"]),
            "cpu_us_per_job": {name: round(value, 1) for name, value in cpu.items()},
            "runs": runs,
        }
    return rows


def measure_flow(context: Context, plan: Plan) -> dict[str, Any]:
    """Our worker on no-op jobs, `flow_repeats` times in turn (medians reported): plain (one job
    type, normal priority, no limits declared), with flow control configured (the jobs spread over the three priority
    levels, their type declared with a concurrency limit that never binds), each of the two alone,
    and with a limit that binds."""
    processes, threads = _config(plan.flow_config)
    run = Run(jobs=plan.flow_jobs, warmup_s=plan.warmup_s, window_s=plan.flow_window_s)
    bound_run = dataclasses.replace(run, jobs=plan.bound_jobs, window_s=plan.window_s)
    limited = {"job": LIMITED_NOOP, "priorities": PRIORITY_LEVELS, "JOB_MODULES": FLOW_MODULE}
    never_binds = {CONCURRENCY_ENV: str(plan.flow_concurrency)}
    variants: dict[str, tuple[Run, dict[str, Any]]] = {
        "plain": (run, {}),
        "flow": (run, {**limited, **never_binds}),
        # Each half of it alone, to tell which one costs what.
        "priorities_only": (run, {"priorities": PRIORITY_LEVELS}),
        "limit_only": (run, {"job": LIMITED_NOOP, "JOB_MODULES": FLOW_MODULE, **never_binds}),
        "bound": (bound_run, {**limited, CONCURRENCY_ENV: str(plan.bound_concurrency)}),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for repeat in range(plan.flow_repeats):
        # Plain and flow control swap places every other repeat, so that a drift of the machine's
        # speed within a repeat favours neither.
        names = list(variants)
        if repeat % 2:
            names[0], names[1] = names[1], names[0]
        for name in names:
            name_run, options = variants[name]
            measure = functools.partial(throughput, context, OURS, processes, threads, name_run, **options)
            runs[name].append(_step(f"flow control: {name} {plan.flow_config}", measure))
    rate = {name: statistics.median(result["jobs_per_s"] for result in results) for name, results in runs.items()}
    cpu = {name: statistics.median(_cpu_per_job(result) for result in results) for name, results in runs.items()}
    return {
        "config": plan.flow_config,
        **{name: round(value) for name, value in rate.items()},
        "ratio": report.ratio(rate["flow"], rate["plain"]),
        "cpu_us_per_job": {name: round(value, 1) for name, value in cpu.items()},
        "cpu_ratio": report.ratio(cpu["flow"], cpu["plain"]),
        "priorities": list(PRIORITY_LEVELS),
        "concurrency": plan.flow_concurrency,
        "bound_concurrency": plan.bound_concurrency,
        "runs": runs,
    }


def measure_backlog(context: Context, plan: Plan) -> dict[str, Any]:
    """A high job behind `backlog_jobs` normal ones, resumed and busy (bench/backlog.py)."""
    processes, threads = _config(plan.flow_config)
    prefetch = context.settings.worker_prefetch
    # The rule: resumed, it is in the first fetch after the resume, so only what the processes
    # take in their first fetches can start before it; busy, what they held when it arrived (up to
    # a prefetch each) and one more fetch of each.
    limits = {"resumed": prefetch * processes, "busy": 2 * prefetch * processes}
    results: dict[str, Any] = {}
    for case in CASES:
        measure = functools.partial(
            high_behind_backlog,
            context,
            processes,
            threads,
            backlog=plan.backlog_jobs,
            runs=plan.backlog_runs,
            case=case,
        )
        results[case] = {
            **_step(f"high job behind {plan.backlog_jobs} ({case})", measure),
            "config": plan.flow_config,
            "started_before_limit": limits[case],
        }
    return results


def _mean(values: Iterable[float]) -> float:
    found = list(values)
    return sum(found) / len(found) if found else 0.0


def _cpu_per_job(result: dict[str, Any]) -> float:
    """Worker processes and redis-server together, per job."""
    return float((result["worker_cpu_us_per_job"] or 0) + (result["redis_cpu_us_per_job"] or 0))


def measure_enqueue(context: Context, plan: Plan) -> dict[str, Any]:
    """The three endpoints taken in turn `enqueue_repeats` times, as the workers are: a passing
    burst of load elsewhere on the machine hits all three, not one."""
    load = enqueue.Load(seconds=plan.wrk_seconds, connections=plan.wrk_connections)
    body = enqueue.email_job(1)
    apps = {"trivial": enqueue.TRIVIAL_API, "naive": enqueue.NAIVE_API, "ours": enqueue.OUR_API}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in apps}
    for _ in range(plan.enqueue_repeats):
        for name, app in apps.items():
            post = functools.partial(enqueue.post_rate, context, app, body, load)
            runs[name].append(_step(f"POST /enqueue {name}", post))
    results: dict[str, Any] = {name: _mean_of_runs(name_runs) for name, name_runs in runs.items()}
    ours = results["ours"]["requests_per_s"]
    results["ratio_to_naive"] = report.ratio(ours, results["naive"]["requests_per_s"])
    results["ratio_to_ceiling"] = report.ratio(ours, results["trivial"]["requests_per_s"])
    batch_load = dataclasses.replace(load, connections=plan.batch_connections)
    batch_body = enqueue.batch_body(plan.batch_size)
    post_batch = functools.partial(
        enqueue.post_rate, context, enqueue.OUR_API, batch_body, batch_load, "/enqueue/batch"
    )
    batch = _mean_of_runs(
        [_step(f"POST /enqueue/batch x{plan.batch_size}", post_batch) for _ in range(plan.enqueue_repeats)]
    )
    results["batch"] = {
        **batch,
        "jobs_per_request": plan.batch_size,
        "jobs_per_s": round(batch["requests_per_s"] * plan.batch_size),
    }
    producer = functools.partial(enqueue.producer_rate, context, plan.producer_jobs, plan.producer_runs)
    results["producer"] = _step(f"producer --generate {plan.producer_jobs} (x{plan.producer_runs})", producer)
    return results


def _mean_of_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates and percentiles averaged over the runs, errors added up, and the runs themselves."""
    mean: dict[str, Any] = {"runs": runs, "errors": sum(run["errors"] for run in runs)}
    for figure in ("requests_per_s", "p50_ms", "p99_ms"):
        values = [run[figure] for run in runs if run[figure] is not None]
        mean[figure] = round(_mean(values), 2) if values else None
    mean["requests"] = sum(run["requests"] for run in runs)
    return mean


def measure_latency(context: Context, plan: Plan, workers: dict[str, Any]) -> dict[str, Any]:
    processes, threads = _config(plan.latency_config)
    idle = functools.partial(latency, context, samples=plan.idle_samples, gap_s=plan.idle_gap_s)
    results: dict[str, Any] = {}
    results["ours_idle"] = _step("idle latency, ours", functools.partial(idle, OURS, processes, threads))
    # Under load: half of what this configuration drained in the throughput runs.
    capacity = workers.get(plan.latency_config, {}).get("ours") or 2_000
    loaded = functools.partial(
        latency, context, OURS, processes, threads, samples=plan.load_samples, gap_s=plan.load_gap_s
    )
    results["ours_load"] = _step("latency under load, ours", functools.partial(loaded, load_per_s=capacity / 2))
    results["plain_idle"] = _step(
        "idle latency, plain Dramatiq",
        functools.partial(
            latency, context, PLAIN, processes, threads, samples=plan.plain_idle_samples, gap_s=plan.idle_gap_s
        ),
    )
    for row in results.values():
        row["config"] = plan.latency_config
    return results


def _config(config: str) -> tuple[int, int]:
    processes, _, threads = config.partition("x")
    return int(processes), int(threads)


def _step(label: str, measure: Callable[[], T]) -> T:
    print(f"measuring {label} ...", file=sys.stderr, flush=True)
    began = time.monotonic()
    result = measure()
    print(f"  {label}: {result} ({time.monotonic() - began:.1f} s)", file=sys.stderr, flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
