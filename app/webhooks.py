"""Delivering a webhook: a signed JSON POST, refused for private addresses unless allowed."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from app.errors import PermanentJobError

SIGNATURE_HEADER = "X-Taskqueue-Signature"
TIMESTAMP_HEADER = "X-Taskqueue-Timestamp"
DELIVERY_HEADER = "X-Taskqueue-Delivery"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookError(Exception):
    """A delivery that may succeed later (connection error, timeout, 429, 5xx): retried."""


class ForbiddenDestination(PermanentJobError):
    """The URL points at a loopback, link-local or private address that is not allowed."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>` with WEBHOOK_SECRET."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def check_destination(url: str, allowed: Iterable[str], *, resolve: bool = True) -> None:
    """Refuse URLs to non-public addresses (server-side request forgery) unless listed as allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ForbiddenDestination("url must be an absolute http:// or https:// URL")
    host = parts.hostname.lower()
    allowed = tuple(allowed)
    if host in allowed:
        return
    try:
        addresses: list[IpAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        if not resolve:
            return
        addresses = _resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
    for address in addresses:
        if not address.is_global and not _in_allowed(address, allowed):
            raise ForbiddenDestination(
                f"url host {host!r} resolves to {address}, a loopback, link-local or private address; "
                "add it to WEBHOOK_ALLOWED_HOSTS to allow it"
            )


def _resolve(host: str, port: int) -> list[IpAddress]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as error:
        raise WebhookError(f"cannot resolve {host!r}: {error}") from None
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def _in_allowed(address: IpAddress, allowed: tuple[str, ...]) -> bool:
    for item in allowed:
        try:
            if address in ipaddress.ip_network(item, strict=False):
                return True
        except ValueError:
            continue
    return False


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect could lead to a forbidden address


_opener = urllib.request.build_opener(_NoRedirects)


def deliver(
    *,
    job_id: str,
    url: str,
    payload: Any,
    secret: str,
    timeout_s: float,
    allowed_hosts: Iterable[str],
) -> int:
    """POST the payload; return the status. WebhookError to retry, PermanentJobError to give up."""
    check_destination(url, allowed_hosts)
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "taskqueue-webhook/1",
        TIMESTAMP_HEADER: timestamp,
        DELIVERY_HEADER: job_id,
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _opener.open(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        status = error.code
        if status == 429 or status >= 500:
            raise WebhookError(f"receiver answered {status}; will retry") from None
        raise PermanentJobError(f"receiver answered {status}; not retried (client error)") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise WebhookError(f"could not reach {urlsplit(url).netloc}: {reason}") from None
