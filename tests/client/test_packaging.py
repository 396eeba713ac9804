"""The client's two packagings stay in step: the service's pyproject.toml (extras `client` and `cli`)
and client/pyproject.toml (the `taskqueue-client` distribution, without the service's dependencies)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.support.services import ROOT


def _project(path: Path) -> dict[str, object]:
    with path.open("rb") as file:
        return dict(tomllib.load(file))


SERVICE = _project(ROOT / "pyproject.toml")
CLIENT = _project(ROOT / "client" / "pyproject.toml")


def test_both_declare_the_same_dependencies_and_the_same_tq() -> None:
    service, client = SERVICE["project"], CLIENT["project"]
    assert isinstance(service, dict) and isinstance(client, dict)
    extras = service["optional-dependencies"]
    assert client["dependencies"] == extras["client"] == ["httpx>=0.27,<1"]
    assert ["taskqueue[client]", *client["optional-dependencies"]["cli"]] == extras["cli"]
    assert client["scripts"]["tq"] == service["scripts"]["tq"] == "taskqueue.cli:main"
    assert client["version"] == service["version"]
    assert "taskqueue[cli]" in extras["dev"]  # so that `make test` installs what these tests run


def test_both_ship_the_package_and_its_py_typed() -> None:
    setuptools = SERVICE["tool"]["setuptools"]  # type: ignore[index]
    assert "taskqueue*" in setuptools["packages"]["find"]["include"]
    assert setuptools["package-data"]["taskqueue"] == ["py.typed"]
    client = CLIENT["tool"]["setuptools"]  # type: ignore[index]
    assert client["packages"] == ["taskqueue"] and client["package-dir"] == {"taskqueue": "../taskqueue"}
    assert client["package-data"]["taskqueue"] == ["py.typed"]
    assert (ROOT / "taskqueue" / "py.typed").exists()
