"""The operations console end to end: Debian's chromium driven by Playwright, against the real
API, a real worker and a private Redis. One browser and one stack for the module; each test
leaves the queues as it found them. Screenshots go to var/test-artifacts/console/ (and, when
missing or with UPDATE_SCREENSHOTS=1, to docs/console/ for the README)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.receivers import ScriptedReceiver
from tests.support.services import ROOT, RedisServer, Stack, running_redis, wait_until
from tests.support.tools import unavailable

pytestmark = pytest.mark.slow

import playwright.sync_api as playwright_sync  # noqa: E402 - the dev extra installs it; a skip would hide it

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]  # fmt: skip
READONLY_KEY = "test-readonly-key-9876543210"
ARTIFACTS = ROOT / "var" / "test-artifacts" / "console"
DOCS = ROOT / "docs" / "console"
AXE = Path(__file__).resolve().parents[1] / "support" / "vendor" / "axe-core-4.14.1" / "axe.min.js"


class Console:
    """The stack, its API client, the webhook receiver and the browser of this module."""

    def __init__(self, stack: Stack, base: str, receiver: ScriptedReceiver, browser: Any) -> None:
        self.stack, self.base, self.receiver, self.browser = stack, base, receiver, browser
        self.api = httpx.Client(base_url=base, headers={"x-api-key": stack.api_key}, timeout=10)
        self.healthy = False

    def enqueue(self, job_name: str, data: Any, **extra: Any) -> str:
        response = self.api.post("/enqueue", json={"jobName": job_name, "data": data, **extra})
        assert response.status_code == 202, response.text
        return str(response.json()["jobId"])

    def state(self, job_id: str) -> str | None:
        response = self.api.get(f"/jobs/{job_id}")
        return response.json().get("state") if response.status_code == 200 else None

    def failing_webhook(self) -> str:
        job_id = self.enqueue("webhookJob", {"url": self.receiver.url, "payload": {"n": 1}}, maxRetries=0)
        wait_until(lambda: self.state(job_id) == "failed", timeout=30, message=f"{job_id} to fail")
        return job_id

    def signed_in(self, key: str) -> Any:
        """A new browser page signed in with `key`."""
        context = self.browser.new_context(base_url=self.base, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto("/ui/")
        assert page.url.endswith("/ui/signin?next=/ui/")
        page.fill("#key", key)
        page.click("button[type=submit]")
        page.wait_for_url("**/ui/")
        return page


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    target = DOCS / f"{name}.png"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1" or not target.exists():
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def assert_no_key(console: Console, page: Any) -> None:
    for key in (console.stack.api_key, READONLY_KEY):
        assert key not in page.content() and key not in page.url


def assert_accessible(page: Any) -> None:
    """axe-core (vendored, run in the page: evaluate is not subject to the page's CSP) finds no
    serious or critical violation."""
    result = page.evaluate(AXE.read_text() + "\n;axe.run(document, {resultTypes: ['violations']})")
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]
           if v["impact"] in ("serious", "critical")]  # fmt: skip
    assert bad == [], bad


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    if not os.access(CHROMIUM, os.X_OK):
        unavailable("chromium is not installed: install the Debian package `chromium`")
    tmp = tmp_path_factory.mktemp("console")
    # A job posting to /flaky fails twice, then succeeds.
    receiver = ScriptedReceiver(
        lambda job_id, n, path: 200 if console_state["healthy"] or (path == "/flaky" and n > 2) else 500
    )
    console_state = {"healthy": False}
    with running_redis(tmp / "redis") as server:
        redis_server: RedisServer = server
        stack = Stack(redis_server, tmp, API_READONLY_KEY=READONLY_KEY)
        try:
            _, base = stack.api()
            stack.worker(threads=4)
            with playwright_sync.sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                made = Console(stack, base, receiver, browser)
                made.flags = console_state  # type: ignore[attr-defined]
                try:
                    yield made
                finally:
                    made.api.close()
                    browser.close()
        finally:
            stack.stop_all()
            receiver.close()


@pytest.fixture(scope="module")
def page(console: Console) -> Any:
    """The page signed in with the full key, shared by the tests of the module."""
    return console.signed_in(console.stack.api_key)


def test_a_wrong_key_is_refused_and_the_right_one_signs_in(console: Console) -> None:
    context = console.browser.new_context(base_url=console.base)
    page = context.new_page()
    page.goto("/ui/signin")
    screenshot(page, "signin")
    page.fill("#key", "not-the-key")
    page.click("button[type=submit]")
    assert "not the API key" in page.inner_text("#signin-error")
    page.fill("#key", console.stack.api_key)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/")
    cookie = next(c for c in context.cookies() if c["name"] == "tq_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    assert_no_key(console, page)
    page.click("text=Sign out")
    page.wait_for_url("**/ui/signin")
    page.goto("/ui/jobs")
    assert "/ui/signin" in page.url
    context.close()


def test_the_overview_shows_queues_charts_and_workers_with_its_headers(console: Console, page: Any) -> None:
    response = page.goto("/ui/")
    headers = response.headers
    assert (
        "script-src 'self'" in headers["content-security-policy"]
        and "unsafe-inline" not in headers["content-security-policy"]
    )
    assert headers["x-frame-options"] == "DENY"
    row = page.locator("tr[data-queue=default]")
    assert row.count() == 1 and "active" in row.inner_text()
    assert page.locator("svg.chart").count() == 2
    wait_until(lambda: page.reload() and "Workers alive (1)" in page.inner_text("#workers-h"), message="the worker")
    assert page.locator("#live").is_checked()
    assert_no_key(console, page)
    assert_accessible(page)


def test_a_failing_webhook_appears_as_failed_with_its_traceback(console: Console, page: Any) -> None:
    job_id = console.failing_webhook()
    page.goto("/ui/jobs?state=failed")
    page.click(f"tr[data-job='{job_id}'] a")
    page.wait_for_url(f"**/ui/jobs/{job_id}")
    assert page.inner_text("#job-state") == "failed"
    assert "Traceback" in page.inner_text("#job-traceback")
    assert "500" in page.inner_text("#job-error")
    assert page.locator("text=Retry now").count() == 1 and page.locator("text=Delete").count() == 1
    assert "$TASKQUEUE_API_KEY" in page.inner_text("#curl")
    assert_no_key(console, page)
    assert_accessible(page)
    screenshot(page, "job")
    page.goto("/ui/jobs")
    page.fill("#jump-id", job_id)
    page.click("form.jump button")
    page.wait_for_url(f"**/ui/jobs/{job_id}")
    page.goto("/ui/jobs?state=failed&q=500")
    assert page.locator(f"tr[data-job='{job_id}']").count() == 1
    assert_accessible(page)
    screenshot(page, "jobs")
    # A count that cannot hold the succeeded jobs says so.
    page.goto("/ui/jobs?jobName=webhookJob")
    assert "not counting the succeeded ones" in page.inner_text("#count")
    page.goto("/ui/jobs?since=1h")
    assert "not counting" not in page.inner_text("#count")


def test_the_timeline_lists_each_attempt_with_its_worker_and_error(console: Console, page: Any) -> None:
    url = console.receiver.url.replace("/hook", "/flaky")
    job_id = console.enqueue("webhookJob", {"url": url, "payload": {"n": 2}}, maxRetries=3)
    wait_until(lambda: console.state(job_id) == "succeeded", timeout=30, message=f"{job_id} to succeed")
    page.goto(f"/ui/jobs/{job_id}")
    attempts = page.locator("#job-timeline li.attempt")
    assert [attempts.nth(n).get_attribute("data-attempt") for n in range(attempts.count())] == ["1", "2", "3"]
    worker = console.api.get(f"/jobs/{job_id}").json()["worker"]
    for n, outcome in ((0, "Attempt 1 failed, retried"), (1, "Attempt 2 failed, retried"), (2, "Attempt 3 succeeded")):
        text = attempts.nth(n).inner_text()
        assert outcome in text and "started" in text and "took" in text and f"worker {worker}" in text, text
    for n in (0, 1):
        attempt = attempts.nth(n)
        assert "500" in attempt.locator("pre.error").inner_text()
        # The traceback is collapsed until its summary is clicked.
        traceback = attempt.locator("details pre.traceback")
        assert not traceback.is_visible()
        attempt.locator("summary").click()
        assert traceback.is_visible() and "WebhookError" in traceback.inner_text()
    assert attempts.nth(2).locator("pre.error").count() == 0  # the success has no error of its own
    assert_accessible(page)
    screenshot(page, "job-timeline")


def test_bulk_retry_by_filter_and_the_jobs_then_succeed(console: Console, page: Any) -> None:
    ids = [console.failing_webhook() for _ in range(3)]
    page.goto("/ui/dead?jobName=webhookJob")
    assert_accessible(page)
    screenshot(page, "dead-letters")
    count = int(page.locator("table").first.locator("tr", has_text="webhookJob").locator("td.num").inner_text())
    assert count >= 3
    console.flags["healthy"] = True  # type: ignore[attr-defined]
    page.click("button[name=action][value=retry]")
    assert page.inner_text("#confirm-count") == str(count)
    screenshot(page, "confirm")
    page.click("text=Yes, retry")
    wait_until(lambda: "finished" in page.inner_text("#bulk-state"), timeout=30, message="the bulk retry")
    assert f"{count} retried" in page.inner_text("#bulk-state")
    screenshot(page, "bulk")
    for job_id in ids:
        wait_until(lambda job_id=job_id: console.state(job_id) == "succeeded", timeout=30, message=f"{job_id}")
    console.flags["healthy"] = False  # type: ignore[attr-defined]


def test_delete_a_failed_job(console: Console, page: Any) -> None:
    job_id = console.failing_webhook()
    page.goto(f"/ui/jobs/{job_id}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Delete')")
    page.wait_for_url("**/ui/jobs?done=deleted*")
    assert console.api.get(f"/jobs/{job_id}").status_code == 404


def test_cancel_a_delayed_job(console: Console, page: Any) -> None:
    job_id = console.enqueue("emailJob", {"email": "user@example.com"}, delayMs=600_000)
    page.goto(f"/ui/jobs/{job_id}")
    page.click("button:has-text('Cancel')")
    page.wait_for_url(f"**/ui/jobs/{job_id}?done=canceled")
    assert page.inner_text("#job-state") == "canceled" and console.state(job_id) == "canceled"


def test_pause_and_resume_a_queue(console: Console, page: Any) -> None:
    page.goto("/ui/")
    page.click("tr[data-queue=default] button")
    page.wait_for_url("**/ui/?done=paused*")
    assert "paused" in page.inner_text("tr[data-queue=default]")
    assert console.api.get("/queues/default").json()["paused"] is True
    page.click("tr[data-queue=default] button:has-text('Resume')")
    page.wait_for_url("**/ui/?done=resumed*")
    assert console.api.get("/queues/default").json()["paused"] is False


def test_a_post_without_the_csrf_token_is_refused(console: Console, page: Any) -> None:
    response = page.request.post("/ui/queues/default/pause", form={"csrf": "forged"})
    assert response.status == 403
    response = page.request.post("/ui/queues/default/pause", form={})
    assert response.status == 403
    assert console.api.get("/queues/default").json()["paused"] is False


def test_the_read_only_key_sees_no_buttons_and_a_forged_post_is_refused(console: Console) -> None:
    job_id = console.failing_webhook()
    page = console.signed_in(READONLY_KEY)
    assert page.locator("tr[data-queue=default] button").count() == 0
    page.goto(f"/ui/jobs/{job_id}")
    assert page.locator(".actions button").count() == 0
    page.goto("/ui/dead")
    assert page.locator("#bulk-form").count() == 0
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    for path, form in [(f"/ui/jobs/{job_id}/delete", {}), ("/ui/queues/default/pause", {}),
                       ("/ui/bulk", {"action": "delete", "scope": "matching"})]:  # fmt: skip
        assert page.request.post(path, form={"csrf": csrf, **form}).status == 403, path
    assert console.state(job_id) == "failed"
    # The API refuses the read-only session's writes too.
    response = page.request.post(f"/jobs/{job_id}/retry", headers={"x-csrf-token": csrf})
    assert response.status == 403
    assert_no_key(console, page)
    page.context.close()


def test_the_enqueue_form_shows_the_apis_errors_beside_the_fields(console: Console, page: Any) -> None:
    page.goto("/ui/enqueue?jobName=emailJob")
    page.fill("#fld-email", "not-an-address")
    page.click("form.stack button[type=submit]")
    assert "email" in page.inner_text("#err-email")
    assert_accessible(page)
    screenshot(page, "enqueue")
    page.fill("#fld-email", "user@example.com")
    page.click("form.stack button[type=submit]")
    page.wait_for_url("**/ui/jobs/*?done=enqueued")


def test_the_api_reference_tries_requests_with_the_session(console: Console, page: Any) -> None:
    page.goto("/")
    page.wait_for_url("**/ui/")
    page.goto("/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    status = page.evaluate(
        "fetch('/jobs?limit=1', {headers: {'x-csrf-token': document.querySelector('meta[name=csrf-token]').content}})"
        ".then(r => r.status)"
    )
    assert status == 200
    assert page.evaluate("fetch('/jobs?limit=1').then(r => r.status)") == 401
    assert_no_key(console, page)
    screenshot(page, "docs")
    page.goto("/ui/")  # by now the charts have bars
    screenshot(page, "overview")


def test_wrong_keys_are_rate_limited_per_address(console: Console) -> None:
    """Last in the module: the browser signs in from the same address."""
    with httpx.Client(base_url=console.base, timeout=10) as client:
        form = client.get("/ui/signin")
        token = client.cookies["tq_signin"]
        statuses = [
            client.post("/ui/signin", data={"key": f"wrong-{n}", "signin_token": token}).status_code for n in range(7)
        ]
        assert form.status_code == 200 and statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
