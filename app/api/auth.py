"""The API key check of every job endpoint (constant time; the read-only key may only read).

Without an x-api-key header, the console's session cookie with its CSRF token in `x-csrf-token`
stands for the key it signed in with (app/api/session.py): the /docs page's "try it"."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from app.api.context import api_of
from app.api.errors import ApiError
from app.api.session import api_session


def authorize(request: Request, *, write: bool) -> None:
    api = api_of(request)
    given = request.headers.get("x-api-key")
    if not given:
        session = api_session(request, api.settings)
        if session is not None:
            if write and not session.can_write:
                raise ApiError(403, "this session signed in with the read-only key: sign in with the full API key")
            return
        raise ApiError(401, "missing x-api-key header: send the API key the service was started with (API_KEY)")
    given_bytes = given.encode()
    if hmac.compare_digest(given_bytes, api.settings.api_key.encode()):
        return
    readonly = api.settings.api_readonly_key
    if readonly and hmac.compare_digest(given_bytes, readonly.encode()):
        if write:
            raise ApiError(403, "this key is read-only: use the full API key to change jobs")
        return
    raise ApiError(401, "wrong API key in x-api-key: check API_KEY")
