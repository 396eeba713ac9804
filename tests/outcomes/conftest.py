"""Fixtures of the outcome log's tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop of the test's own, for the async JobStore driven from sync tests."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()
