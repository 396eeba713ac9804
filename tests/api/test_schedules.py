"""GET /schedules on a real API: every schedule with its next run and its last one; and a bad
schedules file stops the API, the workers and the scheduler at start, saying what is wrong."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from app.broker.enqueue import Enqueuer
from app.errors import SettingsError
from app.http import create_app
from app.jobs import load_job_types
from app.keys import Keys
from app.outcomes.log import OutcomeLog
from app.scheduler import run_once
from app.schedules import load_schedules
from app.settings import Settings
from tests.support.services import ROOT, VENV_BIN, Stack

KEYS = Keys()
SCHEDULES = """
[[schedules]]
name = "digest"
cron = "0 8 * * mon-fri"
timezone = "Europe/Paris"
jobName = "emailJob"
data = { email = "ops@example.com", subject = "Digest" }

[[schedules]]
name = "cleanup"
cron = "@daily"
jobName = "cleanupJob"
"""


def test_schedules_are_listed_with_their_next_and_last_runs(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "schedules.toml"
    path.write_text(SCHEDULES)
    env = {"SCHEDULES_FILE": str(path), "API_READONLY_KEY": "read-only-key-0123456789"}
    _, base = stack.api(**env)
    read_only = httpx.Client(base_url=base, headers={"x-api-key": env["API_READONLY_KEY"]}, timeout=10)
    try:
        assert httpx.get(f"{base}/schedules").status_code == 401
        before = datetime.now(UTC)
        response = read_only.get("/schedules")
        assert response.status_code == 200, response.text
        digest, cleanup = response.json()["schedules"]
        settings = Settings.from_env(stack.with_env(**env))
        expected = {s.name: s.next_run(before) for s in load_schedules(settings, load_job_types())}
        assert digest == {
            "name": "digest",
            "cron": "0 8 * * mon-fri",
            "timezone": "Europe/Paris",
            "jobName": "emailJob",
            "data": {"email": "ops@example.com", "subject": "Digest", "body": ""},
            "nextRunAt": int(expected["digest"].timestamp() * 1000),
            "nextRunAtIso": expected["digest"].isoformat(),
            "lastRun": None,
        }
        assert digest["nextRunAtIso"].endswith(("+01:00", "+02:00")) and "T08:00:00" in digest["nextRunAtIso"]
        assert cleanup["nextRunAtIso"].endswith("T00:00:00+00:00") and cleanup["lastRun"] is None

        # Once a scheduler has run it, its last run shows, with the job it enqueued.
        schedule = next(s for s in load_schedules(settings, load_job_types()) if s.name == "cleanup")
        enqueuer = Enqueuer(
            registry=load_job_types(), keys=KEYS, log=OutcomeLog(keys=KEYS, retention_seconds=3600), settings=settings
        )
        run_at = datetime(2024, 6, 2, tzinfo=UTC)
        with stack.redis.client() as client:
            job_id, _ = run_once(schedule, run_at, enqueuer=enqueuer, keys=KEYS, client=client)
        cleanup = read_only.get("/schedules").json()["schedules"][1]
        assert cleanup["lastRun"] == {
            "runAt": int(run_at.timestamp() * 1000),
            "runAtIso": "2024-06-02T00:00:00+00:00",
            "jobId": job_id,
            "enqueuedAt": cleanup["lastRun"]["enqueuedAt"],
        }
        assert read_only.get(f"/jobs/{job_id}").json()["state"] == "queued"
    finally:
        read_only.close()


BAD = '[[schedules]]\nname = "nightly"\ncron = "0 25 * * *"\njobName = "cleanupJob"\n'
WHAT = "schedule 'nightly': cron '0 25 * * *' is not valid: hour field: 25 is out of range 0-23"


def test_the_api_does_not_start_with_a_bad_schedule(tmp_path: Path) -> None:
    path = tmp_path / "schedules.toml"
    path.write_text(BAD)
    with pytest.raises(SettingsError, match="hour field: 25 is out of range"):
        create_app(Settings(api_key="k" * 20, schedules_file=path))


@pytest.mark.parametrize("command", ["dramatiq", "periodiq"])
def test_workers_and_the_scheduler_do_not_start_with_a_bad_schedule(stack: Stack, tmp_path: Path, command: str) -> None:
    path = tmp_path / "schedules.toml"
    path.write_text(BAD)
    result = subprocess.run(
        [str(VENV_BIN / command), "app.actors", *(["--processes", "1"] if command == "dramatiq" else [])],
        env=stack.with_env(SCHEDULES_FILE=str(path)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert f"{path}: {WHAT}" in result.stdout + result.stderr
