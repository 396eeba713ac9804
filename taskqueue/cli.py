"""`tq`: the taskqueue command line for the people on call (`pip install 'taskqueue[cli]'`).

    tq enqueue emailJob '{"email": "user@example.com"}' --wait 30
    tq jobs --state failed --job webhookJob
    tq retry --state failed --job webhookJob
    tq cancel ID
    tq pause default
    tq watch

The API's URL and key come from --url/--api-key or TASKQUEUE_URL/TASKQUEUE_API_KEY and are never
printed. Tables on a terminal, JSON with --json. Exit status: 0 done, 1 the request failed (or a
wait ran out), 2 a usage error.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn, TypeVar

try:
    import click
    import httpx
    from rich.console import Console, Group
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text
except ImportError as error:  # pragma: no cover - depends on the installation
    raise SystemExit(f"tq needs its extra: pip install 'taskqueue[cli]' ({error})") from None

from taskqueue._errors import TaskQueueError, Unauthorized, WaitTimeout
from taskqueue._metrics import Metrics, parse_samples
from taskqueue._models import PRIORITIES, STATES, Job, QueueState
from taskqueue.client import Client

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_URL = "http://localhost:3002"
#: How much of a job's error the job list shows (`tq show` shows all of it).
ERROR_CHARS = 120
#: How wide tables may be when stdout is not a terminal.
PIPE_WIDTH = 400
STATE_STYLES = {
    "queued": "cyan",
    "running": "blue",
    "retrying": "yellow",
    "succeeded": "green",
    "failed": "bold red",
    "skipped": "magenta",
    "canceled": "dim",
}


@dataclass
class Options:
    """The group's options, shared by every command."""

    url: str
    api_key: str | None
    timeout: float
    retry_for: float
    json: bool = False
    out: Console = field(default_factory=lambda: _console())
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True))

    def client(self, *, retry_for: float | None = None, key: bool = True) -> Client:
        """A client of the API; `key`: the command needs the API key (only /metrics does not)."""
        if key and not self.api_key:
            raise click.UsageError("no API key: set TASKQUEUE_API_KEY or pass --api-key")
        try:
            return Client(
                self.url,
                self.api_key or None,
                timeout=self.timeout,
                retry_for=self.retry_for if retry_for is None else retry_for,
            )
        except ValueError as error:
            raise click.UsageError(str(error)) from None

    def emit(self, value: Any) -> None:
        """A JSON document on stdout (for scripts and jq)."""
        click.echo(json.dumps(value, indent=2 if self.out.is_terminal else None, ensure_ascii=False))


def _console() -> Console:
    """stdout: the terminal's width; off a terminal (a pipe, a file) tables are not cut to 80 columns."""
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, soft_wrap=False, width=PIPE_WIDTH if wide else None)


def _options() -> Options:
    return click.get_current_context().find_object(Options)  # type: ignore[return-value]


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    options = ctx.find_object(Options)
    if value and options is not None:
        options.json = True


def json_option(command: F) -> F:
    """--json on each command, as on the group (`tq jobs --json` = `tq --json jobs`)."""
    return click.option(
        "--json", is_flag=True, expose_value=False, callback=_set_json, help="Print JSON instead of a table."
    )(command)


class _Group(click.Group):
    """Turns the client's errors into a message on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TaskQueueError as error:
            _fail(ctx, error)
        except ValueError as error:  # an argument the client refused before sending anything
            raise click.UsageError(str(error)) from None


def _fail(ctx: click.Context, error: TaskQueueError) -> NoReturn:
    options = ctx.find_object(Options)
    if options is not None and options.json:
        body: dict[str, Any] = {"error": error.message, "status": error.status}
        if error.details is not None:
            body["details"] = error.details
        if isinstance(error, WaitTimeout):
            body["job"] = dict(error.job.raw)
        click.echo(json.dumps(body, ensure_ascii=False), err=True)
    else:
        err = options.err if options is not None else Console(stderr=True, highlight=False)
        err.print(Text(f"tq: {error}", style="red"))
        for path, reason in _field_problems(error.details):
            if f"{path}: {reason}" not in error.message:
                err.print(Text(f"  {path}: {reason}"))
    ctx.exit(1)


def _field_problems(details: Any) -> Iterator[tuple[str, str]]:
    if isinstance(details, dict) and isinstance(details.get("fields"), dict):
        yield from ((str(k), str(v)) for k, v in details["fields"].items())
    elif isinstance(details, list):
        for problem in details:
            if isinstance(problem, dict):
                index = problem.get("index")
                fields = problem.get("fields")
                if isinstance(fields, dict):
                    yield from ((f"jobs[{index}].{k}", str(v)) for k, v in fields.items())
                else:
                    yield f"jobs[{index}]", str(problem.get("error"))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--url",
    envvar="TASKQUEUE_URL",
    default=DEFAULT_URL,
    metavar="URL",
    help=f"The API's base URL (env TASKQUEUE_URL; default {DEFAULT_URL}).",
)
@click.option(
    "--api-key",
    envvar="TASKQUEUE_API_KEY",
    metavar="KEY",
    help="The API key (env TASKQUEUE_API_KEY; prefer the variable: a flag shows in the process list).",
)
@click.option(
    "--timeout", type=click.FloatRange(min=0.1), default=10.0, metavar="SECONDS", help="Seconds for each request (10)."
)
@click.option(
    "--retry-for",
    type=click.FloatRange(min=0),
    default=30.0,
    metavar="SECONDS",
    help="Seconds to keep retrying while the API is unreachable or answers 503 (30; 0: never).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables (for scripts and jq).")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None, timeout: float, retry_for: float, as_json: bool) -> None:
    """Enqueue, inspect and act on the jobs of a taskqueue service."""
    ctx.obj = Options(url=url, api_key=api_key, timeout=timeout, retry_for=retry_for, json=as_json)


def _data_argument(raw: str) -> Any:
    if raw == "-":
        raw = sys.stdin.read()
    elif raw.startswith("@"):
        try:
            with open(raw[1:], encoding="utf-8") as file:
                raw = file.read()
        except OSError as error:
            raise click.BadParameter(f"cannot read {raw[1:]}: {error.strerror}", param_hint="DATA") from None
    try:
        return json.loads(raw)
    except ValueError as error:
        raise click.BadParameter(f"not valid JSON ({error})", param_hint="DATA") from None


@cli.command(short_help="Enqueue a job (its data as JSON).")
@click.argument("job_name")
@click.argument("data", default="{}")
@click.option("--delay", type=click.FloatRange(min=0), help="Run it no earlier than this many seconds from now.")
@click.option("--idempotency-key", metavar="KEY", help="The same key within 24 h enqueues nothing new.")
@click.option("--priority", type=click.Choice(PRIORITIES), help="Its priority (default: the job type's).")
@click.option(
    "--max-retries", type=click.IntRange(0, 100), metavar="N", help="Retries after a failure, 0 to 100 (the type's)."
)
@click.option("--queue", metavar="NAME", help="A declared queue to put it on (default: the job type's).")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), metavar="SECONDS", help="Then wait for its outcome.")
@json_option
def enqueue(
    job_name: str,
    data: str,
    delay: float | None,
    idempotency_key: str | None,
    priority: str | None,
    max_retries: int | None,
    queue: str | None,
    wait_s: float | None,
) -> None:
    """Enqueue a job: JOB_NAME and its DATA as JSON ('-' reads stdin, '@file' a file).

    \b
    tq enqueue emailJob '{"email": "user@example.com"}'
    tq enqueue webhookJob @hook.json --wait 30
    tq enqueue emailJob @mail.json --priority high --max-retries 2
    """
    options = _options()
    body = _data_argument(data)
    with options.client() as client:
        job_id = client.enqueue(
            job_name,
            body,
            delay=delay,
            idempotency_key=idempotency_key,
            priority=priority,
            max_retries=max_retries,
            queue=queue,
        )
        if wait_s is None:
            if options.json:
                options.emit({"jobId": job_id})
            else:
                options.out.print(f"Job added: [bold]{job_id}[/]")
            return
        _show(options, client.wait(job_id, wait_s))


@cli.command(short_help="Show one job (--wait: once it has finished).")
@click.argument("job_id")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), metavar="SECONDS", help="Wait until it finishes.")
@click.option("--data", "with_data", is_flag=True, help="Show the job's data too.")
@json_option
def show(job_id: str, wait_s: float | None, with_data: bool) -> None:
    """Show one job's outcome record, its last error's traceback (and with --data its data);
    with --wait, once it has finished."""
    options = _options()
    with options.client() as client:
        if wait_s is not None:
            _show(options, client.wait(job_id, wait_s, include_data=with_data))
        else:
            _show(options, client.get(job_id, include_data=with_data))


def _show(options: Options, job: Job) -> None:
    if options.json:
        options.emit(dict(job.raw))
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    tries = "" if job.max_retries is None else f" of {job.max_retries + 1}"
    rows: list[tuple[str, Any]] = [
        ("job", job.job_id),
        ("type", job.job_name),
        ("queue", job.queue),
        ("state", _state(job.state)),
        ("priority", job.priority),
        ("attempts", f"{job.attempts}{tries}"),
        ("enqueued", _when(job.enqueued_at)),
        ("run at", _when(job.run_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
        ("duration", _duration(job.duration_ms)),
        ("next retry", _when(job.next_retry_at)),
        ("executions", job.executions),
        ("redeliveries", job.redeliveries),
        ("requeues", job.requeues),
        ("progress", _progress(job)),
        ("cancel asked", _when(job.cancel_requested_at)),
        ("canceled", _when(job.canceled_at)),
        ("result", None if job.result is None else json.dumps(job.result, ensure_ascii=False)),
        ("error", Text(job.error, style="red") if job.error else None),
        ("traceback", job.traceback),
        ("data", None if job.data is None else json.dumps(job.data, ensure_ascii=False)),
    ]
    for name, value in rows:
        if value not in (None, ""):
            table.add_row(name, value if isinstance(value, Text) else str(value))
    options.out.print(table)


def _progress(job: Job) -> str | None:
    if job.progress is None:
        return None
    message = f" {job.progress_message}" if job.progress_message else ""
    return f"{job.progress:g} %{message} ({_when(job.progress_at, short=True)})"


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def _when(moment: datetime | None, *, short: bool = False) -> str:
    if moment is None:
        return ""
    local = moment.astimezone()
    if short and local.date() == datetime.now().astimezone().date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M:%S")


def _duration(milliseconds: int | None) -> str:
    if milliseconds is None:
        return ""
    if milliseconds < 1000:
        return f"{milliseconds} ms"
    if milliseconds < 60_000:
        return f"{milliseconds / 1000:.1f} s"
    return f"{milliseconds // 60_000} min {milliseconds % 60_000 // 1000} s"


@cli.command(short_help="List jobs, newest first.")
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state.")
@click.option("--job", "job_name", metavar="NAME", help="Only jobs of this type (emailJob, webhookJob, ...).")
@click.option("--limit", type=click.IntRange(1, 200), default=50, help="Jobs per page (50, at most 200).")
@click.option("--cursor", help="Start after the page this cursor ended (printed under a full page).")
@click.option("--all", "every", is_flag=True, help="Every matching job, page after page.")
@json_option
def jobs(state: str | None, job_name: str | None, limit: int, cursor: str | None, every: bool) -> None:
    """List jobs, newest first."""
    options = _options()
    with options.client() as client:
        if every:
            found, next_cursor = list(client.iter_jobs(state=state, job_name=job_name, page_size=200)), None
        else:
            page = client.list(state=state, job_name=job_name, limit=limit, cursor=cursor)
            found, next_cursor = page.jobs, page.next_cursor
    if options.json:
        options.emit({"jobs": [dict(job.raw) for job in found], "nextCursor": next_cursor})
        return
    if not found:
        options.out.print("No jobs.")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in (("JOB ID", "left"), ("TYPE", "left"), ("STATE", "left"), ("TRIES", "right")):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for name in ("ENQUEUED", "FINISHED", "DURATION"):
        table.add_column(name, no_wrap=True)
    table.add_column("ERROR", overflow="fold")  # the one column that wraps on a narrow terminal
    for job in found:
        table.add_row(
            job.job_id,
            job.job_name,
            _state(job.state),
            str(job.attempts),
            _when(job.enqueued_at, short=True),
            _when(job.finished_at, short=True),
            _duration(job.duration_ms),
            job.error.splitlines()[0][:ERROR_CHARS] if job.error else "",
        )
    options.out.print(table)
    if next_cursor:
        options.out.print(Text(f"more: tq jobs ... --cursor {next_cursor}", style="dim"))


def _one_or_all(job_id: str | None, state: str | None, job_name: str | None) -> bool:
    """True for the bulk form (--state failed), False for one job; a usage error for neither or both."""
    if job_id is not None and (state is not None or job_name is not None):
        raise click.UsageError("give either a JOB_ID or --state failed [--job NAME], not both")
    if job_id is None and state is None:
        raise click.UsageError("give a JOB_ID, or --state failed [--job NAME] for every failed job")
    return job_id is None


@cli.command(short_help="Requeue a failed job, or every failed one.")
@click.argument("job_id", required=False)
@click.option("--state", type=click.Choice(["failed"]), help="Every job in this state (only failed jobs retry).")
@click.option("--job", "job_name", metavar="NAME", help="With --state: only jobs of this type.")
@json_option
def retry(job_id: str | None, state: str | None, job_name: str | None) -> None:
    """Put a failed job back on its queue (same jobId), or every failed job with --state failed."""
    options = _options()
    bulk = _one_or_all(job_id, state, job_name)
    with options.client() as client:
        if bulk:
            requeued = client.retry_failed(job_name)
            if options.json:
                options.emit({"requeued": requeued})
            else:
                options.out.print(f"Requeued {requeued} failed job{'s' * (requeued != 1)}.")
            return
        assert job_id is not None
        job = client.retry(job_id)
    if options.json:
        options.emit(dict(job.raw))
    else:
        options.out.print(f"Requeued {job.job_id} ({job.job_name}): now {job.state}.")


@cli.command(short_help="Delete a finished job, or every failed one.")
@click.argument("job_id", required=False)
@click.option("--state", type=click.Choice(["failed"]), help="Every job in this state (bulk delete takes failed).")
@click.option("--job", "job_name", metavar="NAME", help="With --state: only jobs of this type.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before a bulk delete (needed off a terminal).")
@json_option
def delete(job_id: str | None, state: str | None, job_name: str | None, yes: bool) -> None:
    """Delete a finished job's record, or every failed job with --state failed."""
    options = _options()
    bulk = _one_or_all(job_id, state, job_name)
    if bulk and not yes:
        what = f"every failed {job_name}" if job_name else "every failed job"
        if not sys.stdin.isatty():
            raise click.UsageError(f"deleting {what} needs --yes when not asked on a terminal")
        click.confirm(f"Delete {what}?", abort=True, err=True)
    with options.client() as client:
        if bulk:
            deleted = client.delete_failed(job_name)
            if options.json:
                options.emit({"deleted": deleted})
            else:
                options.out.print(f"Deleted {deleted} failed job{'s' * (deleted != 1)}.")
            return
        assert job_id is not None
        client.delete(job_id)
    if options.json:
        options.emit({"jobId": job_id, "deleted": True})
    else:
        options.out.print(f"Deleted {job_id}.")


@cli.command(short_help="Cancel a job (--force: interrupt it if running).")
@click.argument("job_id")
@click.option("--force", is_flag=True, help="If it is running, interrupt it (as its time limit would).")
@json_option
def cancel(job_id: str, force: bool) -> None:
    """Cancel a job: one that has not started never will; a running one is asked to stop (with
    --force, interrupted). Exit status 0 either way; 1 if there is no such job or it has finished."""
    options = _options()
    with options.client() as client:
        outcome = client.cancel(job_id, force=force)
    job = outcome.job
    if options.json:
        options.emit({**dict(job.raw), "message": outcome.message, "canceled": outcome.canceled})
    elif outcome.canceled:
        options.out.print(f"Canceled {job.job_id} ({job.job_name}): it will not run.")
    else:
        options.out.print(f"Cancel requested for {job.job_id} ({job.job_name}, {job.state}): {outcome.message}.")


def _queue_row(queue: QueueState) -> dict[str, Any]:
    """A queue in --json output: the API's figures."""
    return dict(queue.raw)


def _metrics_rows(metrics: Metrics) -> list[dict[str, Any]]:
    """The queues as /metrics has them (no key: no waiting, running or paused)."""
    return [
        {
            "name": q.name,
            "ready": q.ready,
            "delayed": q.delayed,
            "failed": q.failed,
            "oldestAgeSeconds": round(q.oldest_age_s, 3),
        }
        for q in metrics.queues.values()
    ]


@cli.command(short_help="Each queue's counts, paused state, and live workers.")
@json_option
def queues() -> None:
    """Each declared queue: jobs ready, delayed (also waiting to retry), waiting (for a rate limit or a
    concurrency slot), running and failed, the oldest ready job's age, and whether it is paused;
    and the live workers (from /metrics)."""
    options = _options()
    with options.client() as client:
        states = client.queues()
        metrics = client.metrics()
    if options.json:
        options.emit({"queues": [_queue_row(q) for q in states], "workersAlive": metrics.workers_alive})
        return
    options.out.print(_queue_table(states, rates=None, processed=False))
    options.out.print(f"workers alive: {metrics.workers_alive if metrics.workers_alive is not None else '?'}")


def _queue_action(name: str, pause: bool) -> None:
    options = _options()
    with options.client() as client:
        state = client.pause(name) if pause else client.resume(name)
    if options.json:
        options.emit(_queue_row(state))
    elif pause:
        options.out.print(
            f"Paused {state.name} (since {_when(state.paused_at)}): {state.ready} ready jobs wait "
            f"until tq resume {state.name}; {state.running} running."
        )
    else:
        options.out.print(f"Resumed {state.name}: {state.ready} ready jobs.")


@cli.command(short_help="Pause a queue: no new starts until resumed.")
@click.argument("name")
@json_option
def pause(name: str) -> None:
    """Pause queue NAME: workers start none of its jobs until `tq resume NAME` (running jobs finish,
    enqueues still go in). Pausing a paused queue keeps its first pause time."""
    _queue_action(name, True)


@cli.command(short_help="Resume a paused queue.")
@click.argument("name")
@json_option
def resume(name: str) -> None:
    """Resume queue NAME: its jobs start again at once."""
    _queue_action(name, False)


@cli.command(short_help="The recurring jobs and their next runs.")
@json_option
def schedules() -> None:
    """The schedules of the service's schedules file: cron, time zone, job, next run and last run."""
    options = _options()
    with options.client() as client:
        found = client.schedules()
    if options.json:
        options.emit({"schedules": [dict(schedule.raw) for schedule in found]})
        return
    if not found:
        options.out.print("No schedules.")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("NAME", "CRON", "TIMEZONE", "JOB", "NEXT RUN", "LAST RUN", "LAST JOB"):
        table.add_column(name, no_wrap=True)
    for schedule in found:
        last = schedule.last_run
        table.add_row(
            schedule.name,
            schedule.cron,
            schedule.timezone,
            schedule.job_name,
            _when(schedule.next_run_at),
            _when(last.run_at) if last else "-",
            last.job_id if last else "-",
        )
    options.out.print(table)


def _age(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


PROCESSED_OUTCOMES = ("succeeded", "retried", "failed")


def _paused(queue: QueueState) -> Text:
    if not queue.paused:
        return Text("no")
    return Text(f"since {_when(queue.paused_at, short=True)}" if queue.paused_at else "yes", style="bold yellow")


def _queue_table(
    queues: list[QueueState] | Metrics, *, rates: dict[str, dict[str, float]] | None, processed: bool
) -> Table:
    """The queues' figures: from GET /queues (a list), or only what /metrics has (no key given)."""
    full = not isinstance(queues, Metrics)
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("QUEUE", no_wrap=True)
    columns = (
        ("READY", "DELAYED", "WAITING", "RUNNING", "FAILED", "OLDEST")
        if full
        else ("READY", "DELAYED", "FAILED", "OLDEST")
    )
    for name in columns:
        table.add_column(name, justify="right", no_wrap=True)
    if full:
        table.add_column("PAUSED", no_wrap=True)
    if rates is not None:
        table.add_column("ENQUEUED/s", justify="right", no_wrap=True)
        if processed:
            for outcome in PROCESSED_OUTCOMES:
                table.add_column(f"{outcome.upper()}/s", justify="right", no_wrap=True)
    rows: list[tuple[str, list[str | Text]]] = []
    if isinstance(queues, Metrics):
        for figures in queues.queues.values():
            counts = [figures.ready, figures.delayed, figures.failed]
            rows.append((figures.name, [figures.name, *map(str, counts), _age(figures.oldest_age_s)]))
    else:
        for queue in queues:
            counts = [queue.ready, queue.delayed, queue.waiting, queue.running, queue.failed]
            cells: list[str | Text] = [queue.name, *map(str, counts), _age(queue.oldest_age_seconds)]
            rows.append((queue.name, [*cells, _paused(queue)]))
    for name, row in rows:
        if rates is not None:
            of_queue = rates.get(name)
            row.append(_rate(of_queue.get("enqueued") if of_queue else None))
            if processed:
                row += [_rate(of_queue.get(outcome, 0.0) if of_queue else None) for outcome in PROCESSED_OUTCOMES]
        table.add_row(*row)
    return table


@dataclass
class _Scrape:
    """One refresh of `tq watch`: the figures (/metrics; the queues' own from GET /queues when there
    is a key), or why there are none this time."""

    metrics: Metrics | None
    problems: list[str]
    queues: list[QueueState] | None = None


def _scrape(client: Client, worker_urls: tuple[str, ...], http: httpx.Client, *, with_key: bool) -> _Scrape:
    problems: list[str] = []
    queues = None
    if with_key:
        try:
            queues = client.queues()
        except Unauthorized:
            raise
        except TaskQueueError as error:
            problems.append(f"API queues: {error}")
    try:
        metrics = client.metrics()
    except Unauthorized:
        raise
    except TaskQueueError as error:
        return _Scrape(None, [*problems, f"API: {error}"], queues)
    for number, url in enumerate(worker_urls, start=1):
        try:
            response = http.get(url)
            response.raise_for_status()
        except httpx.HTTPError as error:
            # Not the URL itself: it may hold credentials.
            problems.append(f"worker metrics endpoint {number}: {type(error).__name__}")
            continue
        metrics = metrics.merged(Metrics.from_samples(parse_samples(response.text), at=metrics.at))
    return _Scrape(metrics, problems, queues)


def _watch_view(
    scrape: _Scrape,
    earlier: Metrics | None,
    *,
    interval: float,
    processed: bool,
    shown: Metrics | None,
    shown_queues: list[QueueState] | None,
    with_key: bool,
) -> Group:
    metrics = scrape.metrics or shown
    queues = scrape.queues if scrape.queues is not None else shown_queues
    parts: list[Any] = []
    now = datetime.now().strftime("%H:%M:%S")
    if metrics is None:
        parts.append(Text(f"taskqueue · {now} · no figures yet", style="bold"))
    else:
        workers = "?" if metrics.workers_alive is None else str(metrics.workers_alive)
        redis = {True: "Redis up", False: "Redis DOWN", None: "Redis ?"}[metrics.redis_up]
        noun = "worker" if metrics.workers_alive == 1 else "workers"
        paused = [q.name for q in queues or [] if q.paused]
        header = Text(f"taskqueue · {workers} {noun} alive · {redis} · {now}", style="bold")
        if paused:
            header.append(f" · paused: {', '.join(paused)}", style="bold yellow")
        parts.append(header)
    if metrics is not None or queues is not None:
        rates = metrics.rates(earlier) if metrics is not None and earlier is not None and scrape.metrics else {}
        source: list[QueueState] | Metrics = queues if queues is not None else metrics  # type: ignore[assignment]
        parts.append(_queue_table(source, rates=rates, processed=processed))
    for problem in scrape.problems:
        parts.append(Text(problem, style="red"))
    hint = f"every {interval:g} s · Ctrl-C to stop"
    if not processed:
        hint += " · processed rates: --worker-metrics URL (a worker's /metrics)"
    if not with_key:
        hint += " · waiting, running, paused: set TASKQUEUE_API_KEY"
    parts.append(Text(hint, style="dim"))
    return Group(*parts)


def _watch_line(scrape: _Scrape, earlier: Metrics | None) -> dict[str, Any]:
    metrics = scrape.metrics
    line: dict[str, Any] = {"at": time.time(), "problems": scrape.problems}
    rates = metrics.rates(earlier) if metrics is not None and earlier is not None else {}
    if metrics is not None:
        line.update(workersAlive=metrics.workers_alive, redisUp=metrics.redis_up)
    rows = (
        [_queue_row(q) for q in scrape.queues]
        if scrape.queues is not None
        else _metrics_rows(metrics)
        if metrics is not None
        else None
    )
    if rows is not None:
        line["queues"] = [
            {**row, "rates": {k: round(v, 3) for k, v in rates.get(row["name"], {}).items()}} for row in rows
        ]
    return line


@cli.command(short_help="A live view of the queues, rates and workers.")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, help="Seconds between refreshes (2).")
@click.option(
    "--worker-metrics",
    "worker_urls",
    multiple=True,
    metavar="URL",
    envvar="TASKQUEUE_WORKER_METRICS",
    help="A worker's /metrics (repeatable; env TASKQUEUE_WORKER_METRICS, space-separated): adds processed rates.",
)
@click.option("--count", type=click.IntRange(min=0), default=0, help="Stop after this many refreshes (0: Ctrl-C).")
@json_option
def watch(interval: float, worker_urls: tuple[str, ...], count: int) -> None:
    """A live view of the queues (ready, delayed, waiting, running, failed, oldest, paused), rates and
    live workers, until Ctrl-C. Without an API key, only what /metrics has (no waiting, running, paused).

    With --json, one JSON line per refresh."""
    options = _options()
    processed = bool(worker_urls)
    with_key = bool(options.api_key)
    earlier: Metrics | None = None
    shown: Metrics | None = None
    shown_queues: list[QueueState] | None = None
    refreshes = 0
    # A refresh must not hang on retries: a failed scrape is shown and the next one tries again.
    with options.client(retry_for=0, key=False) as client, httpx.Client(timeout=options.timeout) as http:
        live = None if options.json else Live(console=options.out, auto_refresh=False, transient=False)
        try:
            if live is not None:
                live.start()
            while True:
                scrape = _scrape(client, worker_urls, http, with_key=with_key)
                if live is not None:
                    view = _watch_view(
                        scrape,
                        earlier,
                        interval=interval,
                        processed=processed,
                        shown=shown,
                        shown_queues=shown_queues,
                        with_key=with_key,
                    )
                    live.update(view)
                    live.refresh()
                else:
                    click.echo(json.dumps(_watch_line(scrape, earlier)))
                if scrape.metrics is not None:
                    earlier = shown = scrape.metrics
                if scrape.queues is not None:
                    shown_queues = scrape.queues
                refreshes += 1
                if count and refreshes >= count:
                    return
                time.sleep(interval)
        except KeyboardInterrupt:
            return
        finally:
            if live is not None:
                live.stop()


def main() -> None:
    """The `tq` console script."""
    cli(prog_name="tq")
