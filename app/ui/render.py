"""Templates (Jinja2, autoescaped) and the context every page gets."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from app.ui import assets

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


def when(ms: int | None) -> str:
    """A time in ms since the epoch, as UTC text."""
    if not ms:
        return "—"
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def duration(ms: float | None) -> str:
    """A duration in ms, readable: 850 ms, 12.3 s, 4 min 05 s, 3 h 02 min."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d {hours % 24} h"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


TEMPLATES.env.globals.update(asset=assets.url, when=when, duration=duration, pretty=pretty)
TEMPLATES.env.filters.update(when=when, duration=duration, pretty=pretty)


def render(request: Request, name: str, *, status: int = 200, **context: Any) -> Response:
    found = getattr(request.state, "session", None)
    base = {"session": found, "csrf": found.csrf if found else "", "path": request.url.path}
    return TEMPLATES.TemplateResponse(request, name, {**base, **context}, status_code=status)
