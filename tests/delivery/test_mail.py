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
