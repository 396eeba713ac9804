"""Delivering a webhook: a signed JSON POST, refused for private addresses unless allowed.

The destination is checked twice: at enqueue on the URL alone (no DNS), and at delivery against
every address the host resolves to. The connection then goes to an address that was checked, so
a DNS answer that changes between the check and the connection (DNS rebinding) cannot redirect
it. Redirects are not followed and no proxy is used, for the same reason.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from app.errors import PermanentJobError

SIGNATURE_HEADER = "X-Taskqueue-Signature"
TIMESTAMP_HEADER = "X-Taskqueue-Timestamp"
DELIVERY_HEADER = "X-Taskqueue-Delivery"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64, RFC 6052 and RFC 8215).
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_LOOPBACK_V4 = ipaddress.IPv4Address("127.0.0.1")


class WebhookError(Exception):
    """A delivery that may succeed later (connection error, timeout, 429, 5xx): retried."""


class ForbiddenDestination(PermanentJobError):
    """The URL points at a loopback, link-local or private address that is not allowed."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>` with WEBHOOK_SECRET."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def check_destination(url: str, allowed: Iterable[str], *, resolve: bool = True) -> list[IpAddress]:
    """Refuse URLs to non-public addresses (server-side request forgery) unless WEBHOOK_ALLOWED_HOSTS lists them.

    Returns the addresses that were checked, to connect to; without `resolve` (at enqueue) a host
    name other than `localhost` is not looked up and the list is empty.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ForbiddenDestination("url must be an absolute http:// or https:// URL")
    host = parts.hostname.lower().rstrip(".")
    allowed = tuple(item.lower() for item in allowed)
    try:
        addresses: list[IpAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        if not resolve:
            if _is_loopback_name(host):
                # RFC 6761: these names are loopback whatever DNS says, so they are refused without a lookup.
                _checked(host, [_LOOPBACK_V4], allowed)
            return []
        addresses = _resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
    return _checked(host, addresses, allowed)


def _checked(host: str, addresses: list[IpAddress], allowed: tuple[str, ...]) -> list[IpAddress]:
    if host in allowed:
        return addresses
    for address in addresses:
        if not _is_public(address) and not _in_allowed(address, allowed):
            raise ForbiddenDestination(
                f"url host {host!r} ({address}) is a loopback, link-local or private address: refused. "
                "To allow it, add the host or a CIDR range holding it to WEBHOOK_ALLOWED_HOSTS"
            )
    return addresses


def _is_loopback_name(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


def _is_public(address: IpAddress) -> bool:
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and any(address in prefix for prefix in _NAT64):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return _is_public(embedded)
    return True


def _resolve(host: str, port: int) -> list[IpAddress]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as error:
        raise WebhookError(f"cannot resolve {host!r}: {error}") from None
    unique = dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos)
    return list(unique)


def _in_allowed(address: IpAddress, allowed: tuple[str, ...]) -> bool:
    for item in allowed:
        try:
            if address in ipaddress.ip_network(item, strict=False):
                return True
        except ValueError:
            continue
    return False


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to `host` (Host header) made to one of `addresses`, already checked."""

    def __init__(self, host: str, port: int, *, addresses: Sequence[IpAddress], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.addresses = addresses

    def connect(self) -> None:
        error: OSError | None = None
        for address in self.addresses:
            try:
                self.sock = socket.create_connection((str(address), self.port), self.timeout)
                return
            except OSError as failure:
                error = failure
        raise error or OSError(f"no address to connect to for {self.host}")


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """As above, over TLS: the certificate is checked against the host name, not the address."""

    def __init__(self, host: str, port: int, *, addresses: Sequence[IpAddress], timeout: float) -> None:
        super().__init__(host, port, addresses=addresses, timeout=timeout)
        self.tls = ssl.create_default_context()

    def connect(self) -> None:
        super().connect()
        self.sock = self.tls.wrap_socket(self.sock, server_hostname=self.host)


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
    addresses = check_destination(url, allowed_hosts)
    parts = urlsplit(url)
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
    https = parts.scheme == "https"
    connection_class = _PinnedHTTPSConnection if https else _PinnedHTTPConnection
    connection = connection_class(
        str(parts.hostname), parts.port or (443 if https else 80), addresses=addresses, timeout=timeout_s
    )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers=headers)
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as error:
        raise WebhookError(f"could not reach {parts.hostname}:{connection.port}: {error}") from None
    except ValueError as error:  # a URL http.client will not send (control or non-ASCII characters)
        raise PermanentJobError(f"url cannot be sent: {error}") from None
    finally:
        connection.close()
    if status == 429 or status >= 500:
        raise WebhookError(f"receiver answered {status}; will retry")
    if 300 <= status < 400:
        raise PermanentJobError(f"receiver answered {status}; redirects are not followed: use the final URL")
    if status >= 400:
        raise PermanentJobError(f"receiver answered {status}; not retried (client error)")
    return status
