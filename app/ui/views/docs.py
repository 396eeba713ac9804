"""/docs: the OpenAPI document in the vendored Swagger UI. Its "try it" calls the API with the
console's session (cookie, and the CSRF token this page carries in a meta tag, sent as
x-csrf-token): the key itself never reaches the page. `/` leads to the console."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.ui.guard import DOCS_CSP, page
from app.ui.render import render


@page(public=True, csp=DOCS_CSP)
async def docs(request: Request) -> Response:
    return render(request, "docs.html", title="API reference")


async def home(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=307)
