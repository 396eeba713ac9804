"""Delivering an email: over SMTP when SMTP_URL is set, else into a local mbox file.

What retrying cannot fix raises PermanentJobError (the job fails at once): a message that cannot
be built (a line break in a header), and an SMTP server's permanent refusal (5xx). An unreachable
server and a temporary refusal (4xx) raise other errors, so the job is retried.
"""

from __future__ import annotations

import fcntl
import io
import re
import smtplib
import ssl
import time
from email.errors import MessageError
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote, urlsplit

from app.errors import PermanentJobError

SMTP_TIMEOUT_S = 15
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
#: What no header value may hold, as a regular expression class (read alike by Python and JSON Schema):
#: control characters (CR or LF would start a new header, NUL is not text) and the other line breaks
#: of str.splitlines(), which the email package refuses as it does CR and LF.
HEADER_UNSAFE = r"[\x00-\x1F\x7F-\x9F\u2028\u2029]"
#: What an email's text may not hold: NUL (line breaks are fine, they become CRLF).
BODY_UNSAFE = r"[\x00]"
_HEADER_UNSAFE = re.compile(HEADER_UNSAFE)
_BODY_UNSAFE = re.compile(BODY_UNSAFE)


class TemporaryMailError(Exception):
    """The SMTP server refused for now (a 4xx reply); the job is retried."""


def header_problem(value: str) -> str | None:
    """Why `value` cannot be a header value, or None if it can."""
    found = _HEADER_UNSAFE.search(value)
    if found is None:
        return None
    return f"must not contain control characters or line breaks (U+{ord(found[0]):04X} at position {found.start()})"


def body_problem(value: str) -> str | None:
    """Why `value` cannot be an email's text, or None if it can."""
    found = _BODY_UNSAFE.search(value)
    return None if found is None else f"must not contain NUL characters (U+0000 at position {found.start()})"


def build_message(*, job_id: str, sender: str, to: str, subject: str, body: str) -> EmailMessage:
    """The email of one job; its Message-ID is the job id, so a receiver can drop a duplicate.

    PermanentJobError if it cannot be built (enqueue refuses such data; this catches what got past,
    such as a job queued before that check, or a MAIL_FROM with a line break)."""
    for name, value in (("From", sender), ("To", to), ("Subject", subject), ("X-Taskqueue-Job-Id", job_id)):
        problem = header_problem(value)
        if problem:
            raise PermanentJobError(f"cannot build the email: its {name} header {problem}")
    problem = body_problem(body)
    if problem:
        raise PermanentJobError(f"cannot build the email: its body {problem}")
    try:
        message = EmailMessage()
        message["From"] = sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = f"<{job_id}@taskqueue>"
        message["X-Taskqueue-Job-Id"] = job_id
        message.set_content(body)
    except (ValueError, TypeError, MessageError) as error:
        # The same data fails the same way every time: not worth a retry.
        raise PermanentJobError(f"cannot build the email: {error}") from None
    return message


def deliver(message: EmailMessage, *, smtp_url: str, mbox_path: Path) -> None:
    """Send over SMTP (smtp://, smtp+starttls://, smtps://, credentials in the URL) or append to an mbox."""
    if not smtp_url:
        append_to_mbox(message, mbox_path)
        return
    parts = urlsplit(smtp_url)
    host = parts.hostname or "localhost"
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    try:
        if parts.scheme == "smtps":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                host, port, timeout=SMTP_TIMEOUT_S, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT_S)
        with client:
            if parts.scheme == "smtp+starttls":
                client.starttls(context=ssl.create_default_context())
            if parts.username:
                client.login(unquote(parts.username), unquote(parts.password or ""))
            client.send_message(message)
    # smtplib's errors are OSErrors: the server's refusals are told apart before "unreachable".
    except smtplib.SMTPAuthenticationError as error:
        if _temporary(error.smtp_code):
            raise TemporaryMailError(f"SMTP login deferred ({_reply(error)}); will retry") from None
        raise PermanentJobError(f"SMTP login refused ({error.smtp_code}); check the credentials in SMTP_URL") from None
    except smtplib.SMTPNotSupportedError as error:
        raise PermanentJobError(f"the SMTP server does not support what SMTP_URL asks for: {error}") from None
    except smtplib.SMTPRecipientsRefused as error:
        replies = {recipient: f"{code} {_text(text)}" for recipient, (code, text) in error.recipients.items()}
        if any(_temporary(code) for code, _ in error.recipients.values()):
            raise TemporaryMailError(f"recipient deferred by the SMTP server: {replies}; will retry") from None
        raise PermanentJobError(f"recipient refused by the SMTP server: {replies}") from None
    except smtplib.SMTPConnectError as error:
        # A greeting other than 220: the server is not taking connections now.
        raise ConnectionError(f"SMTP server {host}:{port} unreachable: {_reply(error)}") from None
    except smtplib.SMTPResponseException as error:
        # MAIL FROM (SMTPSenderRefused), DATA (SMTPDataError), HELO, STARTTLS refused.
        if _temporary(error.smtp_code):
            raise TemporaryMailError(
                f"SMTP server {host}:{port} deferred the message ({_reply(error)}); will retry"
            ) from None
        raise PermanentJobError(f"SMTP server {host}:{port} refused the message ({_reply(error)})") from None
    except (TimeoutError, smtplib.SMTPServerDisconnected) as error:
        raise ConnectionError(f"SMTP server {host}:{port} unreachable: {error}") from None
    except smtplib.SMTPException as error:
        # No reply code: the client gave up on what the server offers ("No suitable authentication
        # method found."), which the next attempt would find the same.
        raise PermanentJobError(f"SMTP server {host}:{port}: {error}; check SMTP_URL") from None
    except OSError as error:
        # Unreachable (refused, reset, a failed TLS handshake): the job is retried.
        raise ConnectionError(f"SMTP server {host}:{port} unreachable: {error}") from None


def _temporary(code: int) -> bool:
    """Whether a refusal may succeed later: a 5xx reply is final; a 4xx (or an unexpected code) may."""
    return not 500 <= code < 600


def _reply(error: smtplib.SMTPResponseException) -> str:
    return f"{error.smtp_code} {_text(error.smtp_error)}"


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def append_to_mbox(message: EmailMessage, path: Path) -> None:
    """Append in mbox format. Written directly: `mailbox.mbox` re-reads the whole file per message."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    buffer.write(f"From taskqueue {time.asctime(time.gmtime())}\n".encode())
    BytesGenerator(buffer, mangle_from_=True, policy=message.policy.clone(linesep="\n")).flatten(message)
    data = buffer.getvalue()
    data += b"\n" if data.endswith(b"\n") else b"\n\n"
    with open(path, "ab") as mbox:
        # Several worker processes append to the same file: one locked write per message.
        fcntl.flock(mbox, fcntl.LOCK_EX)
        mbox.write(data)
