"""Delivering an email: over SMTP when SMTP_URL is set, else into a local mbox file."""

from __future__ import annotations

import fcntl
import io
import smtplib
import ssl
import time
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote, urlsplit

from app.errors import PermanentJobError

SMTP_TIMEOUT_S = 15
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


def build_message(*, job_id: str, sender: str, to: str, subject: str, body: str) -> EmailMessage:
    """The email of one job; its Message-ID is the job id, so a receiver can drop a duplicate."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = f"<{job_id}@taskqueue>"
    message["X-Taskqueue-Job-Id"] = job_id
    message.set_content(body)
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
    except smtplib.SMTPAuthenticationError as error:
        raise PermanentJobError(f"SMTP login refused ({error.smtp_code}); check the credentials in SMTP_URL") from None
    except smtplib.SMTPNotSupportedError as error:
        raise PermanentJobError(f"the SMTP server does not support what SMTP_URL asks for: {error}") from None
    except smtplib.SMTPRecipientsRefused as error:
        raise PermanentJobError(f"recipient refused by the SMTP server: {list(error.recipients)}") from None
    except (TimeoutError, smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as error:
        # Transient: the job is retried.
        raise ConnectionError(f"SMTP server {host}:{port} unreachable: {error}") from None


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
