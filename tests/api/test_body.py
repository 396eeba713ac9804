"""The body checks of app/http.py: the depth-only walk agrees with the full one."""

from __future__ import annotations

from typing import Any

import pytest

from app.api.body import MAX_JSON_DEPTH
from app.api.body import check_depth as _check_depth
from app.api.body import check_json as _check_json


def nested(depth: int, *, wide: bool) -> Any:
    """`depth` levels of alternating objects and lists, with siblings of other shapes when wide."""
    value: Any = "leaf"
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
        if wide:
            value = {"a": value, "b": [1, "x", {}], "c": None} if level % 2 else [value, 2, [3], {"d": "e"}]
    return value


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("depth", [1, 31, 32, 33, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1])
def test_depth_walk_agrees_with_the_full_walk(depth: int, wide: bool) -> None:
    value = nested(depth, wide=wide)
    verdicts = []
    for check in (_check_json, _check_depth):
        try:
            check(value)
            verdicts.append("ok")
        except ValueError as error:
            verdicts.append(str(error))
    assert verdicts[0] == verdicts[1]
    if not wide:  # exactly `depth` containers deep
        assert (verdicts[0] == "ok") == (depth <= MAX_JSON_DEPTH)
