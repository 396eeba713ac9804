"""The console's session: a signed cookie that says which key signed in (never the key itself).

The operations console (app/ui/) signs a person in with the API key once and keeps this cookie
instead: signed with a secret derived from API_KEY (a new API_KEY ends every session), holding
the role (full or read-only), a fingerprint of the key used (a new API_READONLY_KEY ends the
read-only sessions) and the session's CSRF token. The API accepts it in place of x-api-key only
with that token in the `x-csrf-token` header, so that another site can never act with it (the
cookie is also SameSite=Strict): this is how the /docs page's "try it" calls the API.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request

from app.settings import Settings

COOKIE = "tq_session"
CSRF_HEADER = "x-csrf-token"
#: A session ends this long after sign-in.
MAX_AGE_S = 8 * 3600
FULL = "full"
READ_ONLY = "read-only"


@dataclass(frozen=True)
class Session:
    """A signed-in person: what they may do, and the token their forms must carry."""

    role: str
    csrf: str

    @property
    def can_write(self) -> bool:
        return self.role == FULL


class Sessions:
    """Issues and reads session cookies for one pair of keys."""

    def __init__(self, api_key: str, readonly_key: str | None, *, max_age_s: int = MAX_AGE_S) -> None:
        self._secret = hmac.new(api_key.encode(), b"taskqueue console session v1", hashlib.sha256).digest()
        self._keys = {FULL: api_key, **({READ_ONLY: readonly_key} if readonly_key else {})}
        self._serializer = URLSafeTimedSerializer(self._secret, salt="console-session")
        self.max_age_s = max_age_s

    def _fingerprint(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()[:32]

    def role_of(self, given: str) -> str | None:
        """The role a key signs in as (compared in constant time), None for a wrong key."""
        found = None
        for role, key in self._keys.items():
            if hmac.compare_digest(given.encode(), key.encode()):
                found = role
        return found

    def issue(self, role: str) -> str:
        """A new session's cookie value (with a fresh CSRF token)."""
        payload = {"r": role, "k": self._fingerprint(self._keys[role]), "c": secrets.token_urlsafe(24)}
        return self._serializer.dumps(payload)

    def read(self, cookie: str | None) -> Session | None:
        """The session of a cookie value: None if missing, forged, expired or of a key no longer in use."""
        if not cookie:
            return None
        try:
            payload = self._serializer.loads(cookie, max_age=self.max_age_s)
        except BadSignature:
            return None
        if not isinstance(payload, dict):
            return None
        role, fingerprint, csrf = payload.get("r"), payload.get("k"), payload.get("c")
        key = self._keys.get(role) if isinstance(role, str) else None
        if key is None or not isinstance(fingerprint, str) or not isinstance(csrf, str):
            return None
        if not hmac.compare_digest(fingerprint, self._fingerprint(key)):
            return None
        return Session(role=role, csrf=csrf)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=4)
def _sessions(api_key: str, readonly_key: str | None) -> Sessions:
    return Sessions(api_key, readonly_key)


def sessions_for(settings: Settings) -> Sessions:
    """The sessions of these settings' keys (built once per pair of keys)."""
    return _sessions(settings.api_key, settings.api_readonly_key)


def csrf_matches(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(session.csrf.encode(), (given or "").encode())


def session_of(request: Request, settings: Settings) -> Session | None:
    """The session of a request's cookie, whatever its CSRF header."""
    return sessions_for(settings).read(request.cookies.get(COOKIE))


def api_session(request: Request, settings: Settings) -> Session | None:
    """The session an API call may act with: a valid cookie and its CSRF token in `x-csrf-token`."""
    if COOKIE not in request.cookies:
        return None
    session = session_of(request, settings)
    if session is None or not csrf_matches(session, request.headers.get(CSRF_HEADER)):
        return None
    return session
