"""`tq` against the real API, worker and a private Redis: each command's table and --json output, its
exit status (0 done, 1 the request failed, 2 a usage error), the URL and key never printed, and
`tq watch` redrawing in a pseudo-terminal until Ctrl-C."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
from click.testing import CliRunner, Result

from taskqueue import Client
from taskqueue.cli import cli
from tests.client.conftest import Served
from tests.support.services import free_port

pytestmark = pytest.mark.slow

TQ = str(Path(sys.executable).parent / "tq")


@pytest.fixture
def tq(served: Served) -> Iterator[Any]:
    """Run `tq ARGS` in process with the URL and key in the environment, as an operator would have them."""
    runner = CliRunner()
    env = {"TASKQUEUE_URL": served.url, "TASKQUEUE_API_KEY": served.api_key, "COLUMNS": "200", "NO_COLOR": "1"}

    def run(*args: str, input: str | None = None, **extra: str) -> Result:
        return runner.invoke(cli, list(args), env={**env, **extra}, input=input, catch_exceptions=False)

    yield run


def _json(result: Result) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_enqueue_prints_the_job_id_or_json_and_waits_with_wait(tq: Any, client: Client) -> None:
    added = tq("enqueue", "emailJob", '{"email": "cli@example.com"}')
    assert added.exit_code == 0 and added.stdout.startswith("Job added: ")
    job_id = added.stdout.split()[-1]
    assert client.wait(job_id, timeout=20).state == "succeeded"

    assert set(_json(tq("enqueue", "emailJob", '{"email": "cli@example.com"}', "--json"))) == {"jobId"}
    assert set(_json(tq("--json", "enqueue", "emailJob", "-", input='{"email": "stdin@example.com"}'))) == {"jobId"}
    keyed = [_json(tq("enqueue", "emailJob", '{"email": "k@example.com"}', "--idempotency-key", "cli-1", "--json"))]
    keyed.append(_json(tq("enqueue", "emailJob", '{"email": "k@example.com"}', "--idempotency-key", "cli-1", "--json")))
    assert keyed[0] == keyed[1]

    waited = tq("enqueue", "emailJob", '{"email": "waited@example.com"}', "--wait", "20")
    assert waited.exit_code == 0, waited.stderr
    assert "state" in waited.stdout and "succeeded" in waited.stdout and "attempts" in waited.stdout
    record = _json(tq("enqueue", "emailJob", '{"email": "waited@example.com"}', "--wait", "20", "--json"))
    assert record["state"] == "succeeded" and record["jobName"] == "emailJob"

    timed_out = tq("enqueue", "emailJob", '{"email": "later@example.com"}', "--delay", "300", "--wait", "0.5")
    assert timed_out.exit_code == 1 and "still queued after 0.5 s" in timed_out.stderr


def test_a_refused_job_exits_1_with_its_field_problems(tq: Any) -> None:
    refused = tq("enqueue", "emailJob", '{"email": "not-an-address"}')
    assert refused.exit_code == 1 and refused.stdout == ""
    assert "invalid data for emailJob" in refused.stderr and "data.email:" in refused.stderr
    as_json = tq("enqueue", "emailJob", '{"email": "not-an-address"}', "--json")
    assert as_json.exit_code == 1
    error = json.loads(as_json.stderr)
    assert error["status"] == 422 and "data.email" in error["details"]["fields"]
    unknown = tq("enqueue", "noSuchJob", "{}")
    assert unknown.exit_code == 1 and "emailJob" in unknown.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["enqueue", "emailJob", "{not json"], "not valid JSON"),
        (["enqueue", "emailJob", "@/no/such/file.json"], "cannot read"),
        (["enqueue", "emailJob", "{}", "--delay", "-1"], "--delay"),
        (["retry"], "give a JOB_ID, or --state failed"),
        (["retry", "some-id", "--state", "failed"], "not both"),
        (["delete", "--state", "failed"], "needs --yes"),
        (["jobs", "--state", "bogus"], "'bogus' is not one of"),
        (["jobs", "--limit", "500"], "--limit"),
        (["cancel"], "Missing argument 'JOB_ID'"),
        (["enqueue", "orderJob", "{}", "--priority", "urgent"], "'urgent' is not one of"),
        (["enqueue", "orderJob", "{}", "--max-retries", "101"], "--max-retries"),
        (["pause"], "Missing argument 'NAME'"),
        (["resume"], "Missing argument 'NAME'"),
        (["schedules", "extra"], "unexpected extra argument"),
        (["show"], "Missing argument 'JOB_ID'"),
    ],
)
def test_usage_errors_exit_2(tq: Any, args: list[str], says: str) -> None:
    result = tq(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert says in result.stderr


def test_no_key_is_a_usage_error_and_a_wrong_key_a_failed_request(tq: Any) -> None:
    missing = tq("jobs", TASKQUEUE_API_KEY="")
    assert missing.exit_code == 2 and "TASKQUEUE_API_KEY" in missing.stderr
    wrong = tq("jobs", TASKQUEUE_API_KEY="wrong-key")
    assert wrong.exit_code == 1 and "wrong API key" in wrong.stderr
    bad_url = tq("jobs", TASKQUEUE_URL="localhost:3002")
    assert bad_url.exit_code == 2 and "http://" in bad_url.stderr


def test_show_prints_the_record_as_a_table_or_json(tq: Any, client: Client) -> None:
    job_id = client.enqueue("emailJob", {"email": "show@example.com"})
    shown = tq("show", job_id, "--wait", "20")
    assert shown.exit_code == 0
    lines = {line.split(None, 1)[0]: line.split(None, 1)[1].strip() for line in shown.stdout.splitlines() if line}
    assert lines["job"] == job_id and lines["type"] == "emailJob" and lines["state"] == "succeeded"
    assert lines["attempts"] == "1 of 6" and lines["duration"].endswith(("ms", "s"))
    record = _json(tq("show", job_id, "--json"))
    assert record["jobId"] == job_id and record["state"] == "succeeded" and "data" not in record
    with_data = tq("show", job_id, "--data")
    assert '{"email": "show@example.com", ' in with_data.stdout
    assert _json(tq("show", job_id, "--data", "--json"))["data"]["email"] == "show@example.com"
    missing = tq("show", "no-such-job")
    assert missing.exit_code == 1 and "no job no-such-job" in missing.stderr


def test_jobs_lists_filtered_jobs_as_a_table_or_json(served: Served, tq: Any, client: Client) -> None:
    client.delete_failed()
    failed = [served.failed_job(client).job_id for _ in range(2)]
    table = tq("jobs", "--state", "failed", "--job", "webhookJob")
    assert table.exit_code == 0
    header, *rows = [line for line in table.stdout.splitlines() if line.strip()]
    assert header.split() == ["JOB", "ID", "TYPE", "STATE", "TRIES", "ENQUEUED", "FINISHED", "DURATION", "ERROR"]
    assert [row.split()[0] for row in rows] == failed[::-1]
    assert all(row.split()[1:4] == ["webhookJob", "failed", "1"] for row in rows)
    assert all("400" in row for row in rows)  # the error column: the receiver's answer

    listed = _json(tq("jobs", "--state", "failed", "--job", "webhookJob", "--json"))
    assert [job["jobId"] for job in listed["jobs"]] == failed[::-1] and listed["nextCursor"] is None
    first = tq("jobs", "--state", "failed", "--limit", "1")
    assert "more: tq jobs ... --cursor " in first.stdout
    cursor = first.stdout.split("--cursor ")[-1].strip()
    second = _json(tq("jobs", "--state", "failed", "--limit", "1", "--cursor", cursor, "--json"))
    assert [job["jobId"] for job in second["jobs"]] == [failed[0]]
    every = _json(tq("jobs", "--state", "failed", "--all", "--json"))
    assert [job["jobId"] for job in every["jobs"]] == failed[::-1]
    assert tq("jobs", "--state", "skipped").stdout.strip() == "No jobs."
    unknown = tq("jobs", "--job", "noSuchJob")
    assert unknown.exit_code == 1 and "is not one of" in unknown.stderr


def test_retry_one_job_or_every_failed_one(served: Served, tq: Any, client: Client) -> None:
    client.delete_failed()
    one = served.failed_job(client).job_id
    with served.held():
        retried = tq("retry", one)
    assert retried.exit_code == 0 and retried.stdout.startswith(f"Requeued {one} (webhookJob): now ")
    assert client.wait(one, timeout=20).state == "failed"
    with served.held():
        assert _json(tq("retry", one, "--json"))["jobId"] == one
    assert client.wait(one, timeout=20).state == "failed"

    other = served.failed_job(client).job_id
    with served.held():
        assert tq("retry", "--state", "failed", "--job", "emailJob").stdout.strip() == "Requeued 0 failed jobs."
        bulk = tq("retry", "--state", "failed", "--job", "webhookJob")
    assert bulk.exit_code == 0 and bulk.stdout.strip() == "Requeued 2 failed jobs."
    for job_id in (one, other):
        assert client.wait(job_id, timeout=20).state == "failed"
    with served.held():
        assert _json(tq("retry", "--state", "failed", "--json")) == {"requeued": 2}
    for job_id in (one, other):
        assert client.wait(job_id, timeout=20).state == "failed"

    running = client.enqueue("emailJob", {"email": "notfailed@example.com"}, delay=300)
    conflict = tq("retry", running)
    assert conflict.exit_code == 1 and "not failed" in conflict.stderr


def test_delete_one_job_or_every_failed_one(served: Served, tq: Any, client: Client) -> None:
    client.delete_failed()
    one, two, three = (served.failed_job(client).job_id for _ in range(3))
    deleted = tq("delete", one)
    assert deleted.exit_code == 0 and deleted.stdout.strip() == f"Deleted {one}."
    assert _json(tq("delete", two, "--json")) == {"jobId": two, "deleted": True}
    gone = tq("delete", one)
    assert gone.exit_code == 1 and "no job" in gone.stderr
    assert tq("delete", "--state", "failed", "--job", "emailJob", "--yes").stdout.strip() == "Deleted 0 failed jobs."
    assert _json(tq("delete", "--state", "failed", "--yes", "--json")) == {"deleted": 1}
    assert client.list(state="failed").jobs == [] and three


def _rows(result: Result) -> list[list[str]]:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return [line.split() for line in result.stdout.splitlines() if line.strip()]


def test_queues_shows_each_queues_counts_paused_state_and_the_live_workers(
    served: Served, tq: Any, client: Client
) -> None:
    client.enqueue("emailJob", {"email": "q@example.com"}, delay=300)
    lines = _rows(tq("queues"))
    assert lines[0] == ["QUEUE", "READY", "DELAYED", "WAITING", "RUNNING", "FAILED", "OLDEST", "PAUSED"]
    assert [line[0] for line in lines[1:-1]] == ["default", "flow"]
    default = next(line for line in lines if line[0] == "default")
    assert int(default[2]) >= 1 and default[-1] == "no"
    assert lines[-1] == ["workers", "alive:", "1"]
    figures = _json(tq("queues", "--json"))
    assert figures["workersAlive"] == 1
    queue = next(q for q in figures["queues"] if q["name"] == "default")
    assert set(queue) == {"name", "ready", "readyByPriority", "delayed", "waiting", "running", "failed",
                          "oldestAgeSeconds", "paused", "pausedAt"} and queue["delayed"] >= 1  # fmt: skip
    # GET /queues needs a key (the read-only one will do).
    assert tq("queues", TASKQUEUE_API_KEY=served.readonly_key).exit_code == 0
    assert tq("queues", TASKQUEUE_API_KEY="").exit_code == 2


def test_pause_and_resume_a_queue(served: Served, tq: Any, client: Client) -> None:
    paused = tq("pause", "flow")
    try:
        assert paused.exit_code == 0 and paused.stdout.startswith("Paused flow (since "), paused.stderr
        assert "until tq resume flow" in paused.stdout
        held = client.enqueue("orderJob", {})
        flow = next(line for line in _rows(tq("queues")) if line[0] == "flow")
        assert flow[-2] == "since" and len(flow[-1]) == len("12:00:00")
        again = _json(tq("pause", "flow", "--json"))
        assert again["name"] == "flow" and again["paused"] is True and again["pausedAt"]
        time.sleep(1.0)
        assert client.get(held).state == "queued"
        watched = json.loads(tq("watch", "--json", "--count", "1").stdout)
        assert next(q for q in watched["queues"] if q["name"] == "flow")["paused"] is True
        readonly = tq("resume", "flow", TASKQUEUE_API_KEY=served.readonly_key)
        assert readonly.exit_code == 1 and "403" in readonly.stderr
    finally:
        resumed = tq("resume", "flow")
    assert resumed.exit_code == 0 and resumed.stdout.startswith("Resumed flow: "), resumed.stderr
    assert client.wait(held, timeout=20).succeeded
    as_json = _json(tq("resume", "flow", "--json"))
    assert as_json["paused"] is False and as_json["pausedAt"] is None
    for command in ("pause", "resume"):
        missing = tq(command, "nosuchqueue")
        assert missing.exit_code == 1 and "no queue 'nosuchqueue'" in missing.stderr
        error = json.loads(tq(command, "nosuchqueue", "--json").stderr)
        assert error["status"] == 404


def test_enqueue_with_priority_max_retries_and_queue(tq: Any, client: Client) -> None:
    added = _json(
        tq("enqueue", "orderJob", "{}", "--priority", "high", "--max-retries", "1", "--queue", "flow", "--delay", "300",
           "--json")
    )  # fmt: skip
    record = _json(tq("show", added["jobId"], "--json"))
    assert (record["priority"], record["maxRetries"], record["queue"]) == ("high", 1, "flow")
    shown = tq("show", added["jobId"])
    assert any(line.split() == ["priority", "high"] for line in shown.stdout.splitlines())
    moved = tq("enqueue", "emailJob", '{"email": "m@example.com"}', "--queue", "flow", "--wait", "20", "--json")
    assert _json(moved)["queue"] == "flow" and _json(moved)["state"] == "succeeded"
    refused = tq("enqueue", "orderJob", "{}", "--queue", "nosuchqueue")
    assert refused.exit_code == 1 and "queue" in refused.stderr
    client.cancel(added["jobId"])


def test_cancel_a_delayed_job_or_a_running_one(served: Served, tq: Any, client: Client) -> None:
    delayed = client.enqueue("orderJob", {}, delay=300)
    canceled = tq("cancel", delayed)
    assert canceled.exit_code == 0 and canceled.stdout.strip() == f"Canceled {delayed} (orderJob): it will not run."
    assert client.get(delayed).state == "canceled"
    other = client.enqueue("orderJob", {}, delay=300)
    body = _json(tq("cancel", other, "--json"))
    assert body["jobId"] == other and body["state"] == "canceled" and body["canceled"] is True
    assert "will not run" in body["message"]
    assert "canceled" in tq("show", other).stdout

    running = served.running_job(client, "slowJob")
    requested = tq("cancel", running)
    assert requested.exit_code == 0 and requested.stdout.startswith(f"Cancel requested for {running} (slowJob, ")
    assert "requested" in requested.stdout
    assert client.wait(running, timeout=20).canceled

    stubborn = served.running_job(client, "stubbornJob")
    forced = _json(tq("cancel", stubborn, "--force", "--json"))
    assert forced["canceled"] is False and "interrupted" in forced["message"]
    assert client.wait(stubborn, timeout=20).canceled

    done = client.enqueue("orderJob", {})
    assert client.wait(done, timeout=20).succeeded
    finished = tq("cancel", done)
    assert finished.exit_code == 1 and "succeeded" in finished.stderr and "409" in finished.stderr
    missing = tq("cancel", "no-such-job", "--json")
    assert missing.exit_code == 1 and json.loads(missing.stderr)["status"] == 404


def test_schedules_as_a_table_or_json(tq: Any) -> None:
    lines = _rows(tq("schedules"))
    assert lines[0] == ["NAME", "CRON", "TIMEZONE", "JOB", "NEXT", "RUN", "LAST", "RUN", "LAST", "JOB"]
    assert lines[1][:4] == ["cleanup", "@daily", "UTC", "cleanupJob"] and lines[1][-2:] == ["-", "-"]
    listed = _json(tq("schedules", "--json"))
    [cleanup] = listed["schedules"]
    assert cleanup["name"] == "cleanup" and cleanup["nextRunAt"] > time.time() * 1000 and cleanup["lastRun"] is None
    assert tq("schedules", TASKQUEUE_API_KEY="wrong-key").exit_code == 1


def test_watch_prints_a_json_line_per_refresh_with_rates(served: Served, tq: Any, client: Client) -> None:
    result = tq("watch", "--json", "--count", "3", "--interval", "0.3", "--worker-metrics", served.worker_metrics_url)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 0 and len(lines) == 3
    assert all(line["workersAlive"] == 1 and line["redisUp"] is True and not line["problems"] for line in lines)
    default = next(q for q in lines[-1]["queues"] if q["name"] == "default")
    assert {"enqueued", "succeeded"} <= set(default["rates"])
    assert {"waiting", "running", "paused", "pausedAt"} <= set(default) and default["paused"] is False
    assert next(q for q in lines[0]["queues"] if q["name"] == "default")["rates"] == {}  # one scrape: no rate yet

    # A worker endpoint that does not answer is reported (by number, not URL) and the view goes on.
    unanswered = f"http://127.0.0.1:{free_port()}/metrics"
    partial = tq("watch", "--json", "--count", "1", "--worker-metrics", unanswered)
    assert partial.exit_code == 0 and json.loads(partial.stdout)["problems"] == [
        "worker metrics endpoint 1: ConnectError"
    ]
    assert unanswered not in partial.stdout
    # /metrics needs no key: neither does `tq watch`, which then shows only what /metrics has.
    keyless = tq("watch", "--json", "--count", "1", TASKQUEUE_API_KEY="")
    assert keyless.exit_code == 0
    default = next(q for q in json.loads(keyless.stdout)["queues"] if q["name"] == "default")
    assert set(default) == {"name", "ready", "delayed", "failed", "oldestAgeSeconds", "rates"}
    del client


def test_watch_redraws_in_a_terminal_until_ctrl_c(served: Served, client: Client) -> None:
    env = {
        **os.environ,
        "TASKQUEUE_URL": served.url,
        "TASKQUEUE_API_KEY": served.api_key,
        "TASKQUEUE_WORKER_METRICS": served.worker_metrics_url,
        "TERM": "xterm-256color",
    }
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(TQ, ["watch", "--interval", "0.3"], env=env, dimensions=(30, 160), encoding="utf-8")
    try:
        screens = []
        for _ in range(4):
            child.expect(r"1 worker alive · Redis up", timeout=15)
            child.expect("Ctrl-C to stop", timeout=15)
            screens.append(child.before)
            client.enqueue("emailJob", {"email": "watched@example.com"})
        assert "QUEUE" in screens[-1] and "ENQUEUED/s" in screens[-1] and "SUCCEEDED/s" in screens[-1]
        assert "RUNNING" in screens[-1] and "PAUSED" in screens[-1]
        assert "default" in screens[-1]
        assert "\x1b[" in "".join(screens)  # drawn with terminal controls: a redraw, not appended lines
        child.sendintr()
        child.expect(pexpect.EOF, timeout=15)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)


def test_the_console_script_exit_codes_and_no_url_or_key_in_any_output(served: Served) -> None:
    env = {**os.environ, "TASKQUEUE_URL": served.url, "TASKQUEUE_API_KEY": served.api_key}
    down = {**env, "TASKQUEUE_URL": f"http://127.0.0.1:{free_port()}"}
    runs = [
        (env, ["--help"], 0),
        (env, ["jobs", "--help"], 0),
        (env, ["jobs", "--limit", "2"], 0),
        (env, ["queues", "--json"], 0),
        (env, ["schedules"], 0),
        (env, ["cancel", "no-such-job"], 1),
        (env, ["pause", "nosuchqueue"], 1),
        (env, ["pause"], 2),
        (env, ["show", "no-such-job"], 1),
        (env, ["--json", "show", "no-such-job"], 1),
        (env, ["enqueue", "emailJob", "{bad"], 2),
        (down, ["--retry-for", "0.3", "jobs"], 1),
        (down, ["--retry-for", "0", "watch", "--count", "1", "--json"], 0),
        ({**env, "TASKQUEUE_API_KEY": "x" + served.api_key}, ["jobs"], 1),
    ]
    secrets = [served.api_key, served.url.removeprefix("http://"), down["TASKQUEUE_URL"].removeprefix("http://")]
    started = time.monotonic()
    for run_env, args, status in runs:
        result = subprocess.run([TQ, *args], env=run_env, capture_output=True, text=True, timeout=60)
        assert result.returncode == status, (args, result.stdout, result.stderr)
        for secret in secrets:
            assert secret not in result.stdout and secret not in result.stderr, (args, secret)
    print(f"\n{len(runs)} runs of the console script in {time.monotonic() - started:.1f} s")
