"""Email delivery against a real SMTP server: plain, STARTTLS and implicit TLS, with credentials from
SMTP_URL, and the mbox fallback when no SMTP_URL is set."""

from __future__ import annotations

import mailbox
import ssl
from collections.abc import Iterator
from email.message import Message
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from app.delivery import mail
from app.errors import PermanentJobError
from tests.support.services import free_port

USER, PASSWORD = "mailer", "s3cret-pass"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        self.messages.append(BytesParser().parsebytes(envelope.content))
        return "250 OK"


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A server certificate for 127.0.0.1 from a private CA that the client is told to trust."""
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def smtp(certificate: ssl.SSLContext) -> Iterator[Any]:
    started: list[Controller] = []

    def start(mode: str) -> tuple[Inbox, int]:
        inbox, port = Inbox(), free_port()
        # aiosmtpd cannot tell an implicit-TLS connection is encrypted; only STARTTLS must precede AUTH.
        options: dict[str, Any] = {"authenticator": authenticate, "auth_require_tls": mode == "starttls"}
        if mode == "starttls":
            options.update(tls_context=certificate, require_starttls=True)
        elif mode == "tls":
            options.update(ssl_context=certificate)
        controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
        controller.start()
        started.append(controller)
        return inbox, port

    yield start
    for controller in started:
        controller.stop()


def message(job_id: str = "job-1") -> Any:
    return mail.build_message(
        job_id=job_id, sender="app@example.com", to="user@example.com", subject="Hi", body="Hello"
    )


@pytest.mark.parametrize(("mode", "scheme"), [("plain", "smtp"), ("starttls", "smtp+starttls"), ("tls", "smtps")])
def test_email_is_delivered_with_credentials_from_the_url(smtp: Any, tmp_path: Path, mode: str, scheme: str) -> None:
    inbox, port = smtp(mode)
    url = f"{scheme}://{USER}:{PASSWORD}@127.0.0.1:{port}"
    mail.deliver(message("job-42"), smtp_url=url, mbox_path=tmp_path / "unused.mbox")
    assert len(inbox.messages) == 1
    received = inbox.messages[0]
    assert received["To"] == "user@example.com"
    # The job id travels as Message-ID, so a receiver can drop a duplicate delivery.
    assert received["Message-ID"] == "<job-42@taskqueue>"
    assert not (tmp_path / "unused.mbox").exists()


def test_wrong_password_is_a_permanent_error_without_the_password_in_it(smtp: Any, tmp_path: Path) -> None:
    _, port = smtp("starttls")
    with pytest.raises(PermanentJobError) as raised:
        mail.deliver(
            message(), smtp_url=f"smtp+starttls://{USER}:wrong-pass@127.0.0.1:{port}", mbox_path=tmp_path / "x"
        )
    assert "wrong-pass" not in str(raised.value)


def test_unreachable_server_is_retried_not_permanent(tmp_path: Path) -> None:
    with pytest.raises(ConnectionError):
        mail.deliver(message(), smtp_url=f"smtp://127.0.0.1:{free_port()}", mbox_path=tmp_path / "x")


def test_without_smtp_url_messages_are_appended_to_the_mbox(tmp_path: Path) -> None:
    path = tmp_path / "mail" / "outbox.mbox"
    for n in range(3):
        mail.deliver(message(f"job-{n}"), smtp_url="", mbox_path=path)
    box = mailbox.mbox(str(path))
    assert [m["Message-ID"] for m in box] == [f"<job-{n}@taskqueue>" for n in range(3)]
    box.close()


# --- what retrying cannot fix fails at once (PermanentJobError); the rest is retried ---

INJECTIONS = {
    "subject-CRLF": {"subject": "Hi\r\nBcc: victim@example.org"},
    "subject-LF": {"subject": "Hi\nBcc: victim@example.org"},
    "subject-line-separator": {"subject": "Hi\u2028Bcc: victim@example.org"},
    "subject-NUL": {"subject": "Hi\x00"},
    "to-CRLF": {"to": "user@example.com\r\nBcc: victim@example.org"},
    "sender-CRLF": {"sender": "app@example.com\r\nBcc: victim@example.org"},
    "body-NUL": {"body": "Hello\x00"},
}


@pytest.mark.parametrize("fields", INJECTIONS.values(), ids=INJECTIONS.keys())
def test_an_injection_that_reaches_the_builder_is_a_permanent_error_and_nothing_is_written(
    tmp_path: Path, fields: dict[str, str]
) -> None:
    # Enqueue refuses such data (tests/delivery/test_email_input.py); a job queued before that
    # check, or a MAIL_FROM with a line break, still gets here. Before: a ValueError, retried 5
    # times for nothing (or, for a NUL, an email written into the mbox as it was).
    values = {"job_id": "job-1", "sender": "app@example.com", "to": "user@example.com", "subject": "Hi", "body": ""}
    with pytest.raises(PermanentJobError, match="cannot build the email"):
        mail.deliver(mail.build_message(**{**values, **fields}), smtp_url="", mbox_path=tmp_path / "outbox.mbox")
    assert not (tmp_path / "outbox.mbox").exists()


def test_a_body_with_line_breaks_is_built_with_them() -> None:
    built = mail.build_message(
        job_id="job-1", sender="app@example.com", to="user@example.com", subject="Hi", body="one\r\ntwo\nthree"
    )
    assert built.get_content().splitlines() == ["one", "two", "three"]


class Refusing:
    """An SMTP server that answers MAIL FROM, RCPT TO or DATA with the reply it is given."""

    def __init__(self, **replies: str) -> None:
        self.replies = replies
        self.delivered = 0

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        envelope.mail_from = address
        return self.replies.get("MAIL", "250 OK")

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        envelope.rcpt_tos.append(address)
        return self.replies.get("RCPT", "250 OK")

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        reply = self.replies.get("DATA", "250 OK")
        self.delivered += reply.startswith("250")
        return reply


@pytest.fixture
def refusing() -> Iterator[Any]:
    started: list[Controller] = []

    def start(**replies: str) -> str:
        port = free_port()
        controller = Controller(Refusing(**replies), hostname="127.0.0.1", port=port)
        controller.start()
        started.append(controller)
        return f"smtp://127.0.0.1:{port}"

    yield start
    for controller in started:
        controller.stop()


@pytest.mark.parametrize(
    ("command", "reply"),
    [("MAIL", "553 5.7.1 Sender address rejected"), ("RCPT", "550 5.1.1 No such user"),
     ("DATA", "554 5.6.0 Message content rejected"), ("DATA", "552 5.3.4 Message too big")],
    ids=["sender-refused", "recipient-refused", "data-refused", "too-big"],
)  # fmt: skip
def test_a_5xx_refusal_is_permanent_and_names_the_reply(
    refusing: Any, tmp_path: Path, command: str, reply: str
) -> None:
    with pytest.raises(PermanentJobError) as raised:
        mail.deliver(message(), smtp_url=refusing(**{command: reply}), mbox_path=tmp_path / "x")
    assert reply.split()[0] in str(raised.value)


@pytest.mark.parametrize(
    ("command", "reply"),
    [("MAIL", "451 4.3.0 Try again later"), ("RCPT", "450 4.2.1 Greylisted, come back later"),
     ("DATA", "452 4.3.1 Insufficient system storage")],
    ids=["sender-deferred", "recipient-greylisted", "data-deferred"],
)  # fmt: skip
def test_a_4xx_refusal_is_retried_not_permanent(refusing: Any, tmp_path: Path, command: str, reply: str) -> None:
    with pytest.raises(mail.TemporaryMailError) as raised:
        mail.deliver(message(), smtp_url=refusing(**{command: reply}), mbox_path=tmp_path / "x")
    assert not isinstance(raised.value, PermanentJobError)
    assert reply.split()[0] in str(raised.value)
