"""Static files under hashed URLs: /ui/static/<digest>/<path>, cached for a year (a new file is a
new URL), and the names templates use to link them."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

STATIC_DIR = Path(__file__).with_name("static")
PREFIX = "/ui/static"
#: A year: the URL changes with the file's content.
IMMUTABLE = "public, max-age=31536000, immutable"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".txt": "text/plain", "": "text/plain"}


@functools.cache
def digests() -> dict[str, str]:
    """Relative path -> the first 12 hex digits of its SHA-256, for every static file."""
    return {
        str(path.relative_to(STATIC_DIR)): hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in sorted(STATIC_DIR.rglob("*"))
        if path.is_file()
    }


def url(path: str) -> str:
    """The hashed URL of a static file (KeyError for one that does not exist: a typo in a template)."""
    return f"{PREFIX}/{digests()[path]}/{path}"


async def static(request: Request) -> Response:
    digest, path = request.path_params["digest"], request.path_params["path"]
    known = digests().get(path)
    if known is None:
        return PlainTextResponse("no such file", status_code=404)
    if digest != known:
        # An old page's URL: answer the current file, but not for long.
        response: Response = FileResponse(STATIC_DIR / path, media_type=_TYPES.get(Path(path).suffix, "text/plain"))
        response.headers["Cache-Control"] = "no-cache"
        return response
    response = FileResponse(STATIC_DIR / path, media_type=_TYPES.get(Path(path).suffix, "text/plain"))
    response.headers["Cache-Control"] = IMMUTABLE
    return response
