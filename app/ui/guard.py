"""What every console page goes through: the session (signed in, and may it act), the CSRF token
of each form that changes something, the security headers, errors as pages, and the limit on
wrong keys at sign-in."""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.api.context import api_of
from app.api.errors import ApiError
from app.api.session import Session, csrf_matches, session_of
from app.errors import BrokerUnavailable, InvalidJobData, JobNotFound, JobStateConflict, UnknownJob
from app.ui.render import render

#: No inline script anywhere (every script is a file under /ui/static/), no framing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: The /docs page: Swagger UI sets style attributes in the markup it builds (still no inline script).
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

View = Callable[[Request], Awaitable[Response]]


def secured(response: Response, csp: str = CSP) -> Response:
    response.headers.update(PAGE_HEADERS)
    response.headers["Content-Security-Policy"] = csp
    return response


def session(request: Request) -> Session:
    """The signed-in session of a page's request (the guard has checked it)."""
    found: Session = request.state.session
    return found


def page(*, public: bool = False, write: bool = False, csp: str = CSP) -> Callable[[View], View]:
    """A console endpoint: signed in (unless `public`), a POST's CSRF token checked, a `write`
    refused to the read-only key (403), our errors shown as pages, the security headers set."""

    def wrap(view: View) -> View:
        @functools.wraps(view)
        async def endpoint(request: Request) -> Response:
            settings = api_of(request).settings
            found = session_of(request, settings)
            request.state.session = found
            if found is None and not public:
                if request.method == "GET":
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return secured(RedirectResponse(f"/ui/signin?next={quote(target)}", status_code=303), csp)
                return secured(error_page(request, 401, "Your session has ended: sign in again."), csp)
            if request.method == "POST" and not public:
                form = await request.form()
                token = form.get("csrf")
                if found is None or not csrf_matches(found, token if isinstance(token, str) else None):
                    return secured(error_page(request, 403, "This form has no valid CSRF token: reload the page."), csp)
                if write and not found.can_write:
                    return secured(
                        error_page(request, 403, "Signed in with the read-only key: nothing can change."), csp
                    )
            try:
                response = await view(request)
            except ApiError as error:
                response = error_page(request, error.status, error.message)
            except JobNotFound as error:
                response = error_page(request, 404, str(error))
            except JobStateConflict as error:
                response = error_page(request, 409, str(error))
            except (InvalidJobData, UnknownJob) as error:
                response = error_page(request, 422, str(error))
            except BrokerUnavailable as error:
                response = error_page(request, 503, f"Redis does not answer ({error}): try again in a moment.")
            return secured(response, csp)

        return endpoint

    return wrap


def error_page(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", status=status, title=f"Error {status}", message=message)


class SignInLimiter:
    """Wrong keys per client address: past `attempts` within `window_s`, sign-in is refused (429)
    until the oldest of them is older than the window. Bounded: it forgets the oldest addresses."""

    def __init__(self, *, attempts: int = 5, window_s: float = 60.0, max_addresses: int = 10_000) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def _recent(self, address: str, now: float) -> collections.deque[float]:
        failures = self._failures.get(address)
        if failures is None:
            return collections.deque()
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def retry_after(self, address: str) -> int:
        """Seconds until this address may try again (0: now)."""
        now = time.monotonic()
        failures = self._recent(address, now)
        if len(failures) < self.attempts:
            return 0
        return max(1, int(failures[0] + self.window_s - now) + 1)

    def failed(self, address: str) -> None:
        now = time.monotonic()
        failures = self._recent(address, now)
        failures.append(now)
        self._failures[address] = failures
        self._failures.move_to_end(address)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


def limiter_of(request: Request) -> SignInLimiter:
    """The app's one limiter (made with the first sign-in)."""
    state = request.app.state
    limiter = getattr(state, "console_sign_in_limiter", None)
    if limiter is None:
        limiter = state.console_sign_in_limiter = SignInLimiter()
    return limiter  # type: ignore[no-any-return]
