"""The API key check of every job endpoint (constant time; the read-only key may only read)."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from app.api.context import api_of
from app.api.errors import ApiError


def authorize(request: Request, *, write: bool) -> None:
    api = api_of(request)
    given = request.headers.get("x-api-key")
    if not given:
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
