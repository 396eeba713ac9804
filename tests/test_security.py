"""Security properties of the API, the workers and webhook delivery.

Keys (required everywhere under /jobs and /enqueue, compared in constant time, a read-only one),
secrets that never reach a response, a metric or a log, JSON-only messages, the allow-list of job
types, bounded sizes, webhook destinations (server-side request forgery), Redis with a password
and over TLS, and where metrics listen. Webhook traffic only ever goes to loopback receivers.
"""

from __future__ import annotations

import contextlib
import dis
import hmac
import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dramatiq
import httpx
import pytest
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

import app.api.auth
import app.api.body
import app.http
from app.delivery import webhooks
from app.errors import InvalidJobData, PermanentJobError
from app.http import ROUTES
from app.jobs import load_job_types
from app.settings import Settings
from tests.support.accepted import KEYS, NOTHING, QUEUES, enqueued
from tests.support.inprocess import api_client
from tests.support.redis_state import record_fields
from tests.support.services import RedisServer, Stack, free_port, redis_server_binary, running_redis, wait_until
from tests.support.tools import require_tool, unavailable

pytestmark = pytest.mark.anyio

API_KEY = "sec-api-key-4f9c2b7e1d6a"
READONLY_KEY = "sec-readonly-key-8a3e5c0b"
SMTP_PASSWORD = "smtp-pass-6d2f8b1a9e"
WEBHOOK_SECRET = "webhook-secret-3c7e9f2d5a"
REDIS_PASSWORD = "redis-pass-5b1d7e3a7c"
SECRETS = (API_KEY, READONLY_KEY, SMTP_PASSWORD, WEBHOOK_SECRET, REDIS_PASSWORD)

EMAIL_JOB = {"jobName": "emailJob", "data": {"email": "user@example.com"}}
PROTECTED = sorted(
    (method, route.path)
    for route in ROUTES
    for method in route.methods or ()
    if method != "HEAD" and route.path.startswith(("/jobs", "/enqueue"))
)
WRITES = [(method, path) for method, path in PROTECTED if method != "GET"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings_for(redis_url: str, **env: str) -> Settings:
    return Settings.from_env(
        {
            "REDIS_URL": redis_url,
            "API_KEY": API_KEY,
            "API_READONLY_KEY": READONLY_KEY,
            "SMTP_URL": f"smtp://mailer:{SMTP_PASSWORD}@127.0.0.1:{free_port()}",
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            **env,
        }
    )


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server that wants REDIS_PASSWORD."""
    with running_redis(tmp_path / "locked-redis", password=REDIS_PASSWORD) as server:
        yield server


@pytest.fixture
def locked_client(locked_redis: RedisServer) -> Iterator[redis.Redis]:
    client = locked_redis.client()
    yield client
    client.close()


@pytest.fixture
async def api(locked_redis: RedisServer) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(locked_redis.url, MAX_BATCH_JOBS="5", MAX_BODY_BYTES="4096")
    async with api_client(settings) as client:
        yield client


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret ({secret[:8]}...) appears in {where}"


def _url(path: str) -> str:
    return path.replace("{job_id}", "some-job")


# ----- keys -----


def test_the_protected_routes_are_all_of_jobs_and_enqueue() -> None:
    assert {path for _, path in PROTECTED} == {
        "/enqueue", "/enqueue/batch", "/jobs", "/jobs/retry", "/jobs/{job_id}", "/jobs/{job_id}/retry",
        "/jobs/{job_id}/cancel",
    }  # fmt: skip
    assert len(PROTECTED) == 9


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_every_jobs_and_enqueue_route_requires_the_key(
    api: httpx.AsyncClient, locked_client: redis.Redis, method: str, path: str
) -> None:
    wrong = ["", "wrong", API_KEY.upper(), API_KEY[:-1], API_KEY + " x", READONLY_KEY[::-1]]
    for key in wrong:
        headers = {"x-api-key": key} if key else {}
        response = await api.request(method, _url(path), headers=headers, json=EMAIL_JOB)
        assert response.status_code == 401, (key, response.text)
        assert response.json()["error"]
    assert enqueued(locked_client) == NOTHING


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
async def test_health_metrics_and_the_document_need_no_key(api: httpx.AsyncClient, path: str) -> None:
    assert (await api.get(path)).status_code == 200


async def test_the_key_is_compared_in_constant_time(api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(app.api.auth.hmac, "compare_digest", spy)
    await api.get("/jobs", headers={"x-api-key": "guess"})
    assert (b"guess", API_KEY.encode()) in compared
    assert (b"guess", READONLY_KEY.encode()) in compared
    compared.clear()
    assert (await api.get("/jobs", headers={"x-api-key": API_KEY})).status_code == 200
    assert compared == [(API_KEY.encode(), API_KEY.encode())]
    # And no plain comparison (==, !=, in) anywhere in the check.
    code = app.api.auth.authorize.__code__
    assert "compare_digest" in code.co_names
    comparisons = [i.argrepr for i in dis.get_instructions(code) if i.opname in ("COMPARE_OP", "CONTAINS_OP")]
    assert comparisons == [], comparisons


async def test_the_read_only_key_reads_but_cannot_change_anything(
    api: httpx.AsyncClient, locked_client: redis.Redis
) -> None:
    full, readonly = {"x-api-key": API_KEY}, {"x-api-key": READONLY_KEY}
    job_id = (await api.post("/enqueue", json=EMAIL_JOB, headers=full)).json()["jobId"]
    before = enqueued(locked_client)

    listing = await api.get("/jobs", headers=readonly)
    assert listing.status_code == 200 and [j["jobId"] for j in listing.json()["jobs"]] == [job_id]
    assert (await api.get(f"/jobs/{job_id}", headers=readonly)).json()["state"] == "queued"
    assert (await api.get("/jobs/other", headers=readonly)).status_code == 404

    for method, path in WRITES:
        url = path.replace("{job_id}", job_id) + ("?state=failed" if (method, path) == ("DELETE", "/jobs") else "")
        body = {"state": "failed"} if path == "/jobs/retry" else {"jobs": [EMAIL_JOB]} if "batch" in path else EMAIL_JOB
        response = await api.request(method, url, headers=readonly, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert "read-only" in response.json()["error"]
    assert enqueued(locked_client) == before
    assert (await api.get(f"/jobs/{job_id}", headers=full)).json()["state"] == "queued"


def test_a_read_only_key_equal_to_the_full_key_is_refused_at_start() -> None:
    with pytest.raises(Exception, match="API_READONLY_KEY is the same as API_KEY"):
        Settings.from_env({"API_KEY": API_KEY, "API_READONLY_KEY": API_KEY})


# ----- secrets in answers and logs -----


async def test_no_answer_or_app_log_carries_a_secret(
    api: httpx.AsyncClient, locked_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    full = {"x-api-key": API_KEY}
    answers = [
        await api.get("/healthz"),
        await api.get("/readyz"),
        await api.get("/openapi.json"),
        await api.post("/enqueue", json=EMAIL_JOB, headers=full),
        await api.post("/enqueue", json=EMAIL_JOB),
        await api.post("/enqueue", json=EMAIL_JOB, headers={"x-api-key": "wrong"}),
        await api.post("/enqueue", json=EMAIL_JOB, headers={"x-api-key": READONLY_KEY}),
        await api.post("/enqueue", content=b"{", headers=full),
        await api.post("/enqueue", json={"jobName": "emailJob", "data": {"email": "x"}}, headers=full),
        await api.post("/enqueue", json={"jobName": "sendFax", "data": {}}, headers=full),
        await api.post("/enqueue", content=b"x" * 5000, headers=full),
        await api.get("/jobs/nope", headers=full),
        await api.put("/jobs", headers=full),
        await api.get("/nowhere"),
    ]
    answers.append(await api.get("/metrics"))
    # Redis refusing the password: the 503 does not repeat the password that was tried.
    wrong = locked_redis.url.replace(REDIS_PASSWORD, "wrong-" + REDIS_PASSWORD[::-1])
    async with api_client(settings_for(wrong)) as client:
        answers += [await client.post("/enqueue", json=EMAIL_JOB, headers=full), await client.get("/readyz")]
    assert {a.status_code for a in answers} >= {200, 202, 400, 401, 403, 404, 405, 413, 422, 503}
    for answer in answers:
        text = answer.text + json.dumps(dict(answer.headers))
        assert_no_secret(text, f"{answer.request.method} {answer.request.url.path} -> {answer.status_code}")
        assert REDIS_PASSWORD[::-1] not in text
    assert_no_secret(caplog.text, "the app's log")
    assert repr(settings_for(locked_redis.url)).count("***") >= 4
    assert_no_secret(repr(settings_for(locked_redis.url)), "repr(Settings)")


class Receiver:
    """A loopback webhook receiver answering a fixed status, recording each request's headers."""

    def __init__(self, status: int, location: str | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((self.path, dict(self.headers), body))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(status: int = 200, location: str | None = None) -> Receiver:
        made.append(Receiver(status, location))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


class _RefusingAuthenticator:
    def __call__(self, *args: Any) -> AuthResult:
        return AuthResult(success=False, handled=False)


class _Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        return "250 OK"


@pytest.fixture
def refusing_smtp() -> Iterator[int]:
    """An SMTP server on loopback that offers AUTH and refuses every login."""
    port = free_port()
    controller = Controller(
        _Sink(), hostname="127.0.0.1", port=port, authenticator=_RefusingAuthenticator(), auth_require_tls=False
    )
    controller.start()
    yield port
    controller.stop()


def _locked_stack(locked_redis: RedisServer, tmp_path: Path, **env: str) -> Stack:
    stack = Stack(locked_redis, tmp_path, **env)
    stack.api_key = API_KEY
    stack.env.update({"API_KEY": API_KEY, "API_READONLY_KEY": READONLY_KEY, "WEBHOOK_SECRET": WEBHOOK_SECRET})
    return stack


@pytest.mark.slow
def test_no_secret_reaches_a_process_log_a_job_record_or_a_metric(
    locked_redis: RedisServer, tmp_path: Path, refusing_smtp: int, receiver_factory: Callable[..., Receiver]
) -> None:
    metrics_port = free_port()
    stack = _locked_stack(
        locked_redis,
        tmp_path,
        SMTP_URL=f"smtp://mailer:{SMTP_PASSWORD}@127.0.0.1:{refusing_smtp}",
        LOG_LEVEL="DEBUG",
        METRICS_PORT=str(metrics_port),
        METRICS_HOST="127.0.0.1",
    )
    try:
        _, base = stack.api()
        stack.worker(processes=1, threads=2)
        ok, refusing = receiver_factory(200), receiver_factory(404)
        bodies: list[str] = []
        with httpx.Client(base_url=base, headers={"x-api-key": API_KEY}, timeout=10) as client:
            jobs = {
                "email": {"jobName": "emailJob", "data": {"email": "user@example.com"}},
                "webhook": {"jobName": "webhookJob", "data": {"url": ok.url, "payload": {"n": 1}}},
                "refused-webhook": {"jobName": "webhookJob", "data": {"url": refusing.url, "payload": {}}},
            }
            ids = {name: client.post("/enqueue", json=job).json()["jobId"] for name, job in jobs.items()}
            for response in (
                client.post("/enqueue", json=jobs["email"], headers={"x-api-key": "wrong"}),
                client.post("/enqueue", json=jobs["email"], headers={"x-api-key": READONLY_KEY}),
                client.post("/enqueue", content=b"{"),
                client.post("/enqueue", json={"jobName": "emailJob", "data": {"email": "x"}}),
            ):
                assert response.status_code >= 400
                bodies.append(response.text)

            def state(name: str) -> str:
                return str(client.get(f"/jobs/{ids[name]}").json()["state"])

            wait_until(lambda: state("email") == "failed", timeout=30, message="the email job to fail its login")
            wait_until(lambda: state("webhook") == "succeeded", timeout=30, message="the webhook")
            wait_until(lambda: state("refused-webhook") == "failed", timeout=30, message="the 404 webhook")
            records = [client.get(f"/jobs/{job_id}").text for job_id in ids.values()]
            assert "SMTP login refused" in records[0] and "SMTP_URL" in records[0]
            bodies += records + [client.get("/jobs").text, client.get("/metrics").text]

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
                return str(response.read().decode())

        # The jobs can be done before the worker's metrics process listens: wait for it.
        bodies.append(wait_until(scrape, timeout=30, message="the worker metrics endpoint"))
        # The webhook was signed with the secret, which itself was not sent.
        _, headers, sent = ok.requests[0]
        assert headers[webhooks.SIGNATURE_HEADER].startswith("sha256=")
        assert_no_secret(json.dumps(headers) + sent.decode(), "the webhook request")
    finally:
        stack.stop_all()
    logs = {path.name: path.read_text(errors="replace") for path in stack.logs.glob("*.log")}
    assert "worker.log" in logs and "api.log" in logs
    assert "DEBUG" in logs["worker.log"]  # the most talkative level was on
    for name, text in logs.items():
        assert_no_secret(text, name)
    for body in bodies:
        assert_no_secret(body, "an answer of the API or the worker metrics")


# ----- message encoding -----


async def test_messages_are_json_never_pickle(api: httpx.AsyncClient, locked_client: redis.Redis) -> None:
    assert isinstance(dramatiq.get_encoder(), dramatiq.JSONEncoder)
    sources = "\n".join(path.read_text() for path in Path(app.http.__file__).parent.rglob("*.py"))
    assert "pickle" not in sources.lower() and "set_encoder" not in sources
    full = {"x-api-key": API_KEY}
    await api.post("/enqueue", json=EMAIL_JOB, headers=full)
    await api.post("/enqueue", json={**EMAIL_JOB, "delayMs": 60_000}, headers=full)
    await api.post("/enqueue/batch", json={"jobs": [EMAIL_JOB, EMAIL_JOB]}, headers=full)
    stored = [body for queue in QUEUES for body in locked_client.hvals(KEYS.queue_messages(queue))]
    assert len(stored) == 4
    for body in stored:
        message = json.loads(body)
        assert message["actor_name"] == "emailJob"
        assert message["args"][1]["email"] == "user@example.com"


# ----- the allow-list of job types -----


@pytest.mark.parametrize(
    "job_name",
    ["EmailJob", "emailJob ", "email_job", "app.actors.email.email_job", "__class__", "dramatiq", "", None, 1, True],
)
async def test_job_name_is_an_allow_list(api: httpx.AsyncClient, locked_client: redis.Redis, job_name: Any) -> None:
    response = await api.post("/enqueue", json={"jobName": job_name, "data": {}}, headers={"x-api-key": API_KEY})
    assert response.status_code == 400, response.text
    assert "cleanupJob, emailJob, webhookJob" in response.json()["error"]
    assert enqueued(locked_client)[0] == []


# ----- sizes -----


async def test_sizes_are_bounded(api: httpx.AsyncClient, locked_client: redis.Redis) -> None:
    full = {"x-api-key": API_KEY}

    async def status(method: str, url: str, headers: dict[str, str] = full, **kwargs: Any) -> int:
        return (await api.request(method, url, headers=headers, **kwargs)).status_code

    email = {"email": "user@example.com"}
    long_subject = {"jobName": "emailJob", "data": {**email, "subject": "s" * 999}}
    deep: Any = {}
    for _ in range(app.api.body.MAX_JSON_DEPTH):
        deep = {"a": deep}
    deep_payload = {"jobName": "webhookJob", "data": {"url": "https://example.com/", "payload": deep}}
    assert await status("POST", "/enqueue", content=b" " * 4097) == 413  # MAX_BODY_BYTES=4096 here
    assert await status("POST", "/enqueue", json=long_subject) == 422
    assert await status("POST", "/enqueue", json=deep_payload) == 400
    assert await status("POST", "/enqueue/batch", json={"jobs": [EMAIL_JOB] * 6}) == 413  # MAX_BATCH_JOBS=5 here
    assert await status("POST", "/enqueue", json=EMAIL_JOB, headers={**full, "idempotency-key": "k" * 201}) == 400
    assert await status("GET", "/jobs?limit=201") == 400
    assert await status("GET", "/jobs?limit=200") == 200
    assert enqueued(locked_client)[0] == []

    # The data limits hold whatever the body limit is.
    async with api_client(Settings.from_env({"REDIS_URL": "redis://127.0.0.1:1/0", "API_KEY": API_KEY})) as client:
        job = {"jobName": "emailJob", "data": {**email, "body": "b" * 100_001}}
        response = await client.post("/enqueue", json=job, headers=full)
        assert response.status_code == 422 and "data.body" in response.json()["details"]["fields"]


# ----- webhook destinations -----

FORBIDDEN_URLS = [
    "http://127.0.0.1/hook",
    "http://127.1.2.3:8080/hook",
    "http://localhost/hook",
    "http://LOCALHOST./hook",
    "http://api.localhost/hook",
    "http://[::1]/hook",
    "http://0.0.0.0/hook",
    "http://2130706433/hook",  # 127.0.0.1 written as one number
    "http://0x7f.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/hook",
    "http://10.1.2.3/hook",
    "http://172.16.0.1/hook",
    "http://172.31.255.254/hook",
    "http://192.168.1.10/hook",
    "http://[fc00::1]/hook",
    "http://[fd12:3456::1]/hook",
    "http://[::ffff:10.0.0.1]/hook",
    "http://100.64.0.1/hook",
]


@pytest.mark.parametrize("url", FORBIDDEN_URLS)
async def test_a_webhook_to_a_private_address_is_refused_at_enqueue(
    api: httpx.AsyncClient, locked_client: redis.Redis, url: str
) -> None:
    job = {"jobName": "webhookJob", "data": {"url": url, "payload": {}}}
    response = await api.post("/enqueue", json=job, headers={"x-api-key": API_KEY})
    assert response.status_code == 422, response.text
    body = response.json()
    assert "loopback, link-local or private address" in body["error"]
    assert "WEBHOOK_ALLOWED_HOSTS" in body["error"]
    assert "data.url" in body["details"]["fields"]
    assert enqueued(locked_client)[0] == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://example.com/hook", ()),  # public: resolved and checked again at delivery
        ("http://10.1.2.3/hook", ("10.0.0.0/8",)),
        ("http://172.20.0.5:8080/hook", ("172.16.0.0/12",)),
        ("http://192.168.1.10/hook", ("192.168.1.10",)),
        ("http://[fd00::5]/hook", ("fc00::/7",)),
        ("http://localhost:8080/hook", ("localhost",)),
        ("http://localhost:8080/hook", ("127.0.0.0/8",)),
        ("http://receiver.internal/hook", ()),  # a name: checked at delivery, against what it resolves to
    ],
)
async def test_allowed_hosts_and_ranges_may_be_webhook_destinations(
    locked_redis: RedisServer, url: str, allowed: tuple[str, ...]
) -> None:
    """The API's own settings decide (not the environment the job types were imported under)."""
    job = {"jobName": "webhookJob", "data": {"url": url, "payload": {}}}
    async with api_client(settings_for(locked_redis.url, WEBHOOK_ALLOWED_HOSTS=",".join(allowed))) as api:
        response = await api.post("/enqueue", json=job, headers={"x-api-key": API_KEY})
    assert response.status_code == 202, response.text  # accepted only: no worker runs here


def _deliver(url: str, allowed: tuple[str, ...], **kwargs: Any) -> int:
    return webhooks.deliver(
        job_id="job-1", url=url, payload={"n": 1}, secret="s", timeout_s=5, allowed_hosts=allowed, **kwargs
    )


def test_delivery_checks_the_resolved_address(receiver_factory: Callable[..., Receiver]) -> None:
    receiver = receiver_factory(200)
    by_name = f"http://localhost:{receiver.port}/hook"
    # Accepted at enqueue as a plain name would be, refused at delivery once resolved.
    with pytest.raises(webhooks.ForbiddenDestination, match=r"'localhost' \(127\.0\.0\.1\).*WEBHOOK_ALLOWED_HOSTS"):
        webhooks.check_destination(by_name, ())
    with pytest.raises(webhooks.ForbiddenDestination):
        _deliver(by_name, ())
    with pytest.raises(webhooks.ForbiddenDestination):
        _deliver(receiver.url, ())
    with pytest.raises(webhooks.ForbiddenDestination):
        _deliver(f"http://[::1]:{receiver.port}/hook", ())
    assert receiver.requests == []
    assert issubclass(webhooks.ForbiddenDestination, PermanentJobError)  # not retried

    assert _deliver(by_name, ("localhost",)) == 200
    assert _deliver(by_name, ("127.0.0.0/8",)) == 200
    assert _deliver(receiver.url, ("127.0.0.1",)) == 200
    assert len(receiver.requests) == 3


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names under .invalid resolve to the addresses listed here; lookups are counted in `lookups`."""
    table: dict[str, list[str]] = {"lookups": []}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".invalid"):
            table["lookups"].append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in table[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", getaddrinfo)
    return table


def test_delivery_connects_to_the_address_it_checked(
    receiver_factory: Callable[..., Receiver], fake_dns: dict[str, list[str]]
) -> None:
    receiver = receiver_factory(200)
    fake_dns["hooks.example.invalid"] = ["127.0.0.1"]
    assert _deliver(f"http://hooks.example.invalid:{receiver.port}/hook?x=1", ("127.0.0.1",)) == 200
    # One lookup, for the check; the connection went to that address (no second lookup to rebind).
    assert fake_dns["lookups"] == ["hooks.example.invalid"]
    path, headers, body = receiver.requests[0]
    assert path == "/hook?x=1" and headers["Host"] == f"hooks.example.invalid:{receiver.port}"
    assert json.loads(body) == {"n": 1}


def test_a_name_with_any_private_address_is_refused_before_connecting(fake_dns: dict[str, list[str]]) -> None:
    fake_dns["mixed.invalid"] = ["93.184.216.34", "10.0.0.7"]
    with pytest.raises(webhooks.ForbiddenDestination, match="10.0.0.7"):
        _deliver("http://mixed.invalid/hook", ())


def test_redirects_are_not_followed(receiver_factory: Callable[..., Receiver]) -> None:
    target = receiver_factory(200)
    redirecting = receiver_factory(302, location=target.url)
    with pytest.raises(PermanentJobError, match="302; redirects are not followed"):
        _deliver(redirecting.url, ("127.0.0.1",))
    assert len(redirecting.requests) == 1 and target.requests == []


def test_https_delivery_verifies_the_certificate_against_the_host_name(
    tmp_path: Path, receiver_factory: Callable[..., Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cert = _openssl_certificate(tmp_path)
    receiver = receiver_factory(200)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, tmp_path / "key.pem")
    receiver.server.socket = tls.wrap_socket(receiver.server.socket, server_side=True)
    url = f"https://localhost:{receiver.port}/hook"
    # The system's CAs do not know this certificate: refused (and retried later, like any TLS failure).
    with pytest.raises(webhooks.WebhookError, match="CERTIFICATE_VERIFY_FAILED"):
        _deliver(url, ("localhost",))
    # Trusting it, the connection goes to the checked address and the certificate matches the name.
    real = ssl.create_default_context
    monkeypatch.setattr(webhooks.ssl, "create_default_context", lambda: real(cafile=str(cert)))
    assert _deliver(url, ("localhost",)) == 200
    assert receiver.requests[0][1]["Host"] == f"localhost:{receiver.port}"


# ----- Redis with a password, and over TLS -----


@pytest.mark.slow
def test_api_and_worker_work_with_a_redis_password(locked_redis: RedisServer, tmp_path: Path) -> None:
    assert f":{REDIS_PASSWORD}@" in locked_redis.url
    with locked_redis.client() as client:
        client.ping()
    with pytest.raises(redis.AuthenticationError), redis.Redis(port=locked_redis.port, socket_timeout=5) as anonymous:
        anonymous.get("x")
    stack = _locked_stack(locked_redis, tmp_path)
    try:
        _, base = stack.api()
        stack.worker(processes=1, threads=2)
        api = stack.client(base)
        job_id = api.enqueue("emailJob", {"email": "locked@example.com"})
        wait_until(lambda: api.state(job_id) == "succeeded", timeout=30, message="the job to run")
        assert "To: locked@example.com" in Path(stack.env["MBOX_PATH"]).read_text()
    finally:
        stack.stop_all()


@pytest.mark.slow
def test_a_wrong_redis_password_gives_a_clear_503_at_once_and_a_clear_worker_error(
    locked_redis: RedisServer, tmp_path: Path
) -> None:
    wrong = locked_redis.url.replace(REDIS_PASSWORD, "not-the-password")
    stack = _locked_stack(locked_redis, tmp_path, REDIS_URL=wrong)
    try:
        _, base = stack.api()
        worker = stack.worker(processes=1, threads=1)
        with httpx.Client(base_url=base, headers={"x-api-key": API_KEY}, timeout=10) as client:
            started = time.monotonic()
            response = client.post("/enqueue", json=EMAIL_JOB)
            assert time.monotonic() - started < 5
            assert response.status_code == 503 and response.headers["retry-after"]
            assert "Redis refused the API's credentials" in response.json()["error"]
            assert "REDIS_URL" in response.json()["error"]
            ready = client.get("/readyz")
            assert ready.status_code == 503 and "credentials in REDIS_URL" in ready.json()["error"]
        # The worker keeps trying (so it recovers once the password is fixed) and says why it cannot work.
        wait_until(lambda: "invalid username-password pair" in worker.log(), timeout=20, message="the worker error")
        assert worker.alive()
    finally:
        stack.stop_all()
    api_log = (stack.logs / "api.log").read_text()
    assert "refused the credentials in REDIS_URL" in api_log
    for log in (api_log, (stack.logs / "worker.log").read_text()):
        assert "not-the-password" not in log and REDIS_PASSWORD not in log


def _openssl_certificate(directory: Path) -> tuple[Path, Path]:
    openssl = require_tool("openssl", "openssl")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return key, cert


@contextlib.contextmanager
def tls_redis(directory: Path) -> Iterator[tuple[str, Path]]:
    """A private redis-server that speaks only TLS; yields its rediss:// URL and the CA file."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = _openssl_certificate(directory)
    port = free_port()
    process = subprocess.Popen(
        [redis_server_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(directory),
         "--logfile", str(directory / "redis.log")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    try:
        try:
            wait_until(lambda: redis.Redis.from_url(url, socket_timeout=2).ping() or process.poll() is not None,
                       timeout=20, message="redis-server over TLS")  # fmt: skip
        except TimeoutError:
            unavailable("redis-server did not start with TLS")
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            unavailable(f"this redis-server has no TLS support (Debian's redis-server has it): {output[-300:]}")
        yield url, cert
    finally:
        process.kill()
        process.wait(timeout=20)
        if process.stdout:
            process.stdout.close()


@pytest.mark.slow
def test_api_and_worker_work_with_redis_over_tls(redis_server: RedisServer, tmp_path: Path) -> None:
    with tls_redis(tmp_path / "tls-redis") as (url, _):
        stack = Stack(redis_server, tmp_path, REDIS_URL=url)  # redis_server stays unused: all goes over TLS
        try:
            _, base = stack.api()
            stack.worker(processes=1, threads=2)
            api = stack.client(base)
            job_id = api.enqueue("emailJob", {"email": "tls@example.com"})
            wait_until(lambda: api.state(job_id) == "succeeded", timeout=30, message="the job over TLS")
        finally:
            stack.stop_all()
        with redis.Redis.from_url(url) as client:  # its record is on the TLS Redis...
            assert record_fields(client, KEYS, job_id)["state"] == "succeeded"
    with redis_server.client() as plain:  # ...and nothing on the plain one
        assert plain.zcard(KEYS.all_index()) == 0 and not record_fields(plain, KEYS, job_id)


async def test_redis_tls_verifies_the_certificate(tmp_path: Path) -> None:
    with tls_redis(tmp_path / "tls-redis") as (url, _):
        unverified = url.split("?")[0]  # the system's CAs do not know this self-signed certificate
        async with api_client(Settings.from_env({"REDIS_URL": unverified, "API_KEY": API_KEY})) as client:
            response = await client.post("/enqueue", json=EMAIL_JOB, headers={"x-api-key": API_KEY})
            assert response.status_code == 503, response.text
            assert "certificate" in response.json()["error"].lower()
        async with api_client(Settings.from_env({"REDIS_URL": url, "API_KEY": API_KEY})) as client:
            response = await client.post("/enqueue", json=EMAIL_JOB, headers={"x-api-key": API_KEY})
            assert response.status_code == 202, response.text


# ----- where metrics listen -----


def _listeners(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port`, read from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.rpartition(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


@pytest.mark.slow
def test_the_worker_metrics_listen_on_metrics_host(stack: Stack) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp to read listening sockets from")
    port = free_port()
    stack.worker(processes=1, threads=1, METRICS_PORT=str(port), METRICS_HOST="127.0.0.1")
    url = f"http://127.0.0.1:{port}/metrics"
    wait_until(lambda: urllib.request.urlopen(url, timeout=2).status == 200, timeout=30, message="worker metrics")
    assert _listeners(port) == {"0100007F"}  # 127.0.0.1 only, not 0.0.0.0 (00000000) nor :: (IPv6)


def test_a_job_type_validated_without_settings_allows_no_private_destination() -> None:
    webhook = load_job_types().get("webhookJob")
    data = {"url": "http://10.1.2.3/hook", "payload": {}}
    with pytest.raises(InvalidJobData) as refused:
        webhook.validate(data)
    assert "WEBHOOK_ALLOWED_HOSTS" in refused.value.problems["data.url"]
    assert webhook.validate(data, Settings(webhook_allowed_hosts=("10.0.0.0/8",)))["url"] == data["url"]
