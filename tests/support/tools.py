"""Programs the suite runs for real. Missing one fails the run in CI (CI set) and skips elsewhere:
a skip must never hide a missing service where the suite is meant to prove it works."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    """Fail under CI, skip on a developer's machine."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (make system-deps installs it)")
    pytest.skip(message)


def require_tool(name: str, package: str) -> str:
    """The path of `name`, or unavailable() naming the Debian package that provides it."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if path is None:
        unavailable(f"{name} is not installed: install the Debian package `{package}`")
    return path
