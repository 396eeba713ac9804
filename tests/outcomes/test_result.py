"""A job's result as its record keeps it (app/outcomes/result.py)."""

from __future__ import annotations

import pytest

from app.errors import PermanentJobError
from app.outcomes.result import InvalidResult, encode_result


def test_none_is_no_result() -> None:
    assert encode_result(None, max_bytes=16) == ""


def test_a_result_is_compact_json_measured_in_utf8_bytes() -> None:
    assert encode_result({"a": [1, 2.5, "é"], "b": None}, max_bytes=None) == '{"a":[1,2.5,"é"],"b":null}'
    assert encode_result("éé", max_bytes=6) == '"éé"'  # 6 bytes: at the cap
    with pytest.raises(InvalidResult, match="is 8 bytes of JSON, over the cap of 6 bytes"):
        encode_result("ééé", max_bytes=6)


def test_past_the_cap_the_error_names_the_size_the_cap_and_the_setting() -> None:
    with pytest.raises(InvalidResult) as raised:
        encode_result({"blob": "x" * 100}, max_bytes=64)
    assert isinstance(raised.value, PermanentJobError)  # no retries
    message = str(raised.value)
    assert "111 bytes" in message and "64 bytes" in message and "RESULT_MAX_BYTES" in message


@pytest.mark.parametrize("value", [{1, 2}, object(), float("nan"), {"x": float("inf")}, b"bytes"])
def test_a_value_that_is_not_json_is_refused(value: object) -> None:
    with pytest.raises(InvalidResult, match="not JSON-serialisable"):
        encode_result(value, max_bytes=None)
