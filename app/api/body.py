"""Reading a request's JSON body: bounded in size, and refusing what JSON parsers accept but the
rest of the system would not (NaN, lone surrogates, nesting deep enough to exhaust a stack)."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request

from app.api.context import api_of
from app.api.errors import ApiError

#: Deeper JSON is refused: no job needs it, and it would exhaust the stack of the encoders downstream.
MAX_JSON_DEPTH = 64


def whole_number(text: str | None) -> int | None:
    """The value of a decimal number in ASCII digits, else None (str.isdigit also takes '²')."""
    if text and text.isascii() and text.isdigit():
        return int(text)
    return None


async def json_body(request: Request) -> Any:
    limit = api_of(request).settings.max_body_bytes
    too_large = ApiError(413, f"request body is larger than {limit} bytes: split it or send fewer jobs")
    declared = whole_number(request.headers.get("content-length"))
    if declared is not None and declared > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return parse_json(bytes(body))


def _not_json(constant: str) -> float:
    raise ValueError(f"{constant} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)


def parse_json(body: bytes) -> Any:
    """A request body as JSON, or a 400: not JSON, NaN or Infinity, an unpaired surrogate, or nested too deep."""
    try:
        # As json.loads(body), with one decoder for every request instead of a new one each.
        value = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
        # A lone surrogate needs a \u escape or a non-ASCII byte, and a depth of more than
        # MAX_JSON_DEPTH as many brackets: most bodies need no walk, and a batch only the depth's.
        if b"\\u" in body or not body.isascii():
            check_json(value)
        elif body.count(b"{") + body.count(b"[") > MAX_JSON_DEPTH:
            check_depth(value)
    except (ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        if "integer string conversion" in reason:
            reason = "a number has too many digits"
        raise ApiError(
            400, f"body is not valid JSON ({reason}): send a JSON object with Content-Type: application/json"
        ) from None
    return value


def check_json(value: Any) -> None:
    """Depth and strings, walked without recursion: what json.loads accepts but Redis, a receiver or an
    SMTP server would not (lone surrogates), or what would exhaust the stack later (deep nesting)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            item.encode()  # UnicodeEncodeError (a ValueError) on a lone surrogate
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)


def check_depth(value: Any) -> None:
    """`check_json`'s depth check alone, level by level, looking at containers only."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 1
    while level:
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            below += [child for child in children if isinstance(child, dict | list)]
        level = below
        depth += 1
