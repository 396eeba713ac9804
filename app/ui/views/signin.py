"""Sign-in with the API key (once: a session cookie from then on) and sign-out."""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.api.context import api_of
from app.api.session import COOKIE, sessions_for
from app.ui.guard import limiter_of, page, secured
from app.ui.render import render

#: A token tying the sign-in form to the browser that loaded it (there is no session yet).
SIGNIN_COOKIE = "tq_signin"


def _next(raw: object) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    target = raw if isinstance(raw, str) else ""
    if not target.startswith("/ui/") or target.startswith("//") or "\\" in target:
        return "/ui/"
    return target


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@page(public=True)
async def sign_in_form(request: Request) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request, "signin.html", title="Sign in", signin_token=token, next=_next(request.query_params.get("next"))
    )
    response.set_cookie(
        SIGNIN_COOKIE, token, max_age=900, path="/ui/signin", httponly=True, samesite="strict", secure=_secure(request)
    )
    return response


@page(public=True)
async def sign_in(request: Request) -> Response:
    api = api_of(request)
    form = await request.form()
    address = request.client.host if request.client else "unknown"
    limiter = limiter_of(request)
    wait = limiter.retry_after(address)
    target = _next(form.get("next"))
    if wait:
        response = render(
            request, "signin.html", status=429, title="Sign in", signin_token=request.cookies.get(SIGNIN_COOKIE, ""),
            next=target, error=f"Too many wrong keys from your address: try again in {wait} s.",
        )  # fmt: skip
        response.headers["Retry-After"] = str(wait)
        return response
    token, expected = form.get("signin_token"), request.cookies.get(SIGNIN_COOKIE)
    if not isinstance(token, str) or not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        return render(
            request, "signin.html", status=403, title="Sign in", signin_token=expected or "", next=target,
            error="The sign-in form had expired: try again.",
        )  # fmt: skip
    key = form.get("key")
    sessions = sessions_for(api.settings)
    role = sessions.role_of(key) if isinstance(key, str) and key else None
    if role is None:
        limiter.failed(address)
        return render(
            request, "signin.html", status=401, title="Sign in", signin_token=expected, next=target,
            error="That is not the API key (API_KEY) nor the read-only key (API_READONLY_KEY).",
        )  # fmt: skip
    limiter.succeeded(address)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE, sessions.issue(role), max_age=sessions.max_age_s, path="/", httponly=True, samesite="strict",
        secure=_secure(request),
    )  # fmt: skip
    response.delete_cookie(SIGNIN_COOKIE, path="/ui/signin")
    return response


@page()
async def sign_out(request: Request) -> Response:
    response = RedirectResponse("/ui/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return secured(response)
