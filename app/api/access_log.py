"""Keeps credentials sent in a query string out of uvicorn's access log.

Keys travel in the `x-api-key` header, and a request carrying one in its URL instead
(`GET /jobs?x-api-key=...`) is refused with 401, but uvicorn still logs the URL it asked for. The
filter sits on the `uvicorn.access` logger: `deploy/uvicorn-logging.json`, which every command
starting the API passes to `--log-config`, installs it. Each query parameter whose name looks like a
credential keeps its name and loses its value, so the path and the other parameters stay readable.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

REDACTED = "***"

# A parameter whose name, lowercased and stripped to letters and digits, contains one of these
# carries a secret (x-api-key, api_key, apiKey, access_token, password, sig, ...). Erring on the wide
# side costs a hidden value in a log line, never a leaked one.
CREDENTIAL_WORDS = ("key", "token", "secret", "passw", "pwd", "auth", "sig", "credential", "session", "cookie")


def is_credential(name: str) -> bool:
    """Whether a query parameter of this (still percent-encoded) name may carry a secret."""
    folded = re.sub(r"[^a-z0-9]", "", unquote_plus(name).lower())
    return any(word in folded for word in CREDENTIAL_WORDS)


def redact_target(target: str) -> str:
    """A request target (path and query string) with the value of every credential parameter replaced."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    parts = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        parts.append(f"{name}={REDACTED}" if equals and is_credential(name) else part)
    return f"{path}?{'&'.join(parts)}"


class RedactCredentials(logging.Filter):
    """Filter of the `uvicorn.access` logger: credentials in the logged query string become `***`."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn logs '%s - "%s %s HTTP/%s" %d' with (client, method, path and query, version, status).
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], redact_target(args[2]), *args[3:])
        return True
