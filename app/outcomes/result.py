"""A job's result as its record keeps it: what the job function returned, as compact JSON,
capped in size (RESULT_MAX_BYTES) so that records stay small."""

from __future__ import annotations

import json
from typing import Any

from app.errors import PermanentJobError

#: The setting that caps a result, named in the error past the cap.
RESULT_MAX_BYTES_SETTING = "RESULT_MAX_BYTES"
# NaN and infinities are not JSON: a result holding one is refused, not written as `NaN`.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class InvalidResult(PermanentJobError):
    """A job returned a result that cannot be kept (not JSON, or past RESULT_MAX_BYTES): the job
    fails at once, since running it again would return the same."""


def encode_result(value: Any, *, max_bytes: int | None) -> str:
    """The result's JSON ('' for None: no result), or InvalidResult saying why not. `max_bytes`:
    the cap on its size in UTF-8 bytes (None: no cap)."""
    if value is None:
        return ""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as error:
        raise InvalidResult(
            f"the job's return value is not JSON-serialisable ({error}): return None, or JSON values "
            "(dicts, lists, strings, finite numbers, booleans)"
        ) from None
    size = len(text.encode())
    if max_bytes is not None and size > max_bytes:
        raise InvalidResult(
            f"the job's result is {size} bytes of JSON, over the cap of {max_bytes} bytes "
            f"({RESULT_MAX_BYTES_SETTING}): return less (keep large output elsewhere and return a reference "
            f"to it), or raise {RESULT_MAX_BYTES_SETTING}"
        )
    return text
