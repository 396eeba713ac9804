"""The API in process: `create_app(settings)` behind httpx's ASGI transport, with its lifespan run."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette

from app.http import create_app
from app.settings import Settings

BASE_URL = "http://testserver"


@contextlib.asynccontextmanager
async def api_client(settings: Settings, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh app for `settings`; its Redis clients open and close with the block.

    Server errors come back as 500 responses (as from a real server), not as exceptions.
    """
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers, timeout=30) as client,
    ):
        yield client


def app_of(client: httpx.AsyncClient) -> Starlette:
    """The app behind a client of `api_client`."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return transport.app  # type: ignore[return-value]
