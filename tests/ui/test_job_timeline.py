"""The job page's timeline (app/ui/views/jobs.py attempts_of): a record's history and its current attempt."""

from __future__ import annotations

from typing import Any

from app.ui.views.jobs import attempts_of


def retried(attempt: int, at: int) -> dict[str, Any]:
    return {"attempt": attempt, "startedAt": at, "finishedAt": at + 5, "durationMs": 5, "error": f"E{attempt}",
            "traceback": f"T{attempt}", "worker": "h:1"}  # fmt: skip


def record(state: str, attempts: int, started: int | None, history: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"state": state, "attempts": attempts, "startedAt": started, "finishedAt": (started or 0) + 9,
            "durationMs": 9, "error": "last error", "worker": "h:2", "history": history}  # fmt: skip


def test_the_history_then_the_current_attempt() -> None:
    found = attempts_of(record("running", 3, 3_000, [retried(1, 1_000), retried(2, 2_000)]))
    assert [(a["attempt"], a["outcome"]) for a in found] == [
        (1, "failed, retried"), (2, "failed, retried"), (3, "running"),
    ]  # fmt: skip
    # A running attempt has not finished, and the record's error is an earlier attempt's.
    assert found[2]["finishedAt"] is None and found[2]["error"] is None and found[2]["worker"] == "h:2"
    assert not any(a.get("requeued") for a in found)


def test_a_retrying_jobs_current_attempt_is_the_historys_last() -> None:
    found = attempts_of(record("retrying", 2, 2_000, [retried(1, 1_000), retried(2, 2_000)]))
    assert [a["attempt"] for a in found] == [1, 2]


def test_a_failed_attempt_shows_its_error_and_a_first_attempt_success_is_alone() -> None:
    (failed,) = attempts_of(record("failed", 1, 1_000, None))
    assert failed["outcome"] == "failed, dead-lettered" and failed["error"] == "last error"
    (succeeded,) = attempts_of(record("succeeded", 1, 1_000, None))
    assert succeeded["outcome"] == "succeeded" and succeeded["error"] is None and succeeded["durationMs"] == 9
    assert attempts_of(record("queued", 0, None, None)) == []


def test_a_requeue_is_marked_where_the_attempts_count_again() -> None:
    found = attempts_of(record("running", 1, 9_000, [retried(1, 1_000), retried(2, 2_000), retried(1, 5_000)]))
    assert [(a["attempt"], a.get("requeued", False)) for a in found] == [(1, False), (2, False), (1, True), (1, True)]
