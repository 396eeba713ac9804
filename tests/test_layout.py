"""The shape of the code: configuration enters once, imports run one way, each fact in one place."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(APP.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The app modules `name` imports at module level (not under TYPE_CHECKING, not inside functions)."""
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for item in ast.walk(node) if isinstance(node, ast.Import | ast.ImportFrom) else [node]:
            if isinstance(item, ast.Import):
                imported.update(alias.name for alias in item.names)
            elif isinstance(item, ast.ImportFrom):
                base = item.module or ""
                if item.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - item.level + 1] + ([base] if base else [])
                    )
                imported.add(base)
                imported.update(f"{base}.{alias.name}" for alias in item.names)
    return {module for module in imported if module in MODULES and module != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_reads_the_environment_but_settings() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in MODULES.values()
        if path != APP / "settings.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "os.environ" in line or "os.getenv" in line or "getenv(" in line
    ]
    assert offenders == [], "only app/settings.py may touch the environment:\n" + "\n".join(offenders)


def test_app_modules_import_each_other_without_a_cycle() -> None:
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    # A package's __init__ is imported with each of its modules: an edge to a module is one to its package.
    for name in list(graph):
        graph[name] |= {parent for module in graph[name] for parent in _parents(module) if parent != name}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_the_packages_of_app_import_each_other_one_way() -> None:
    """app.api, app.broker, app.connection, ...: if one imports another, never the other way round."""

    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        graph.setdefault(package(name), set()).update(
            package(module) for module in _imports(name, path) if package(module) != package(name)
        )
    assert _cycle(graph) is None, f"packages import each other: {' -> '.join(_cycle(graph) or [])}"


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(2, len(parts)) if ".".join(parts[:n]) in MODULES]


def test_lua_lives_in_lua_files() -> None:
    offenders = [str(path.relative_to(ROOT)) for path in MODULES.values() if "redis.call(" in path.read_text()]
    assert offenders == [], f"Lua in Python strings: {offenders}; put it in app/connection/lua/"


def _strings(path: Path) -> list[str]:
    """The string constants of a module's code (f-string pieces included), docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


@pytest.mark.parametrize("spelling", [".DQ", ".XQ", ".msgs", "dramatiq:", "taskqueue:", "__acks__", "failedJobs:"])
def test_key_shapes_are_spelled_only_in_keys(spelling: str) -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in MODULES.values()
        if path != APP / "keys.py" and any(spelling in text for text in _strings(path))
    ]
    assert offenders == [], f"{spelling!r} outside app/keys.py: {offenders}"


def test_the_api_and_the_producer_read_the_job_types_without_a_broker() -> None:
    """Declaring job types builds nothing: the API (create_app) and the producer see them, and no
    Dramatiq broker exists in their process."""
    code = (
        "import dramatiq.broker, app.http, app.producer\n"
        "from app.http import create_app\n"
        "from app.settings import Settings\n"
        "app = create_app(Settings(api_key='k'))\n"
        "print(sorted(t.name for t in app.state.api.registry), dramatiq.broker.global_broker)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['cleanupJob', 'emailJob', 'webhookJob'] None"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/venv/bin/dramatiq", "app.actors"], True),
        (["/venv/bin/periodiq", "app.actors"], True),
        (["/usr/lib/python3/site-packages/dramatiq/__main__.py", "app.actors"], True),
        (["/venv/bin/uvicorn", "app.http:app"], False),
        (["-m", "app.producer"], False),
        (["/venv/bin/pytest"], False),
        ([], False),
    ],
)
def test_app_actors_is_the_worker_entry_only_for_the_worker_commands(argv: list[str], expected: bool) -> None:
    from app.actors import is_worker_command

    assert is_worker_command(argv) is expected
