"""Test support for Prometheus: a private server that scrapes given targets, and dashboard queries."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import yaml

from tests.support.services import free_port, wait_until
from tests.support.tools import require_tool

T = TypeVar("T")

DEBIAN_PACKAGE = "prometheus"

# Target lists: ["host:port", ...] (scrape job "test") or {"job name": ["host:port", ...]}.
Targets = Sequence[str] | Mapping[str, Sequence[str]]


def require_binary(name: str) -> str:
    """Path of a Prometheus tool (`prometheus`, `promtool`); fails under CI, skips elsewhere when missing."""
    return require_tool(name, DEBIAN_PACKAGE)


class PrometheusQueryError(RuntimeError):
    """Prometheus rejected a query or an API call."""


class PrometheusServer:
    """A private Prometheus scraping `targets` every second; use as a context manager.

    `honor_labels` defaults to True as in deploy/prometheus.yml, so a scraped `job` label
    (our job type) is kept instead of being renamed to `exported_job`.
    """

    def __init__(
        self,
        targets: Targets = (),
        *,
        scrape_interval: str = "1s",
        honor_labels: bool = True,
        startup_timeout: float = 30.0,
    ) -> None:
        jobs = {"test": list(targets)} if not isinstance(targets, Mapping) else dict(targets)
        self.jobs: dict[str, list[str]] = {name: list(hosts) for name, hosts in jobs.items()}
        self.scrape_interval = scrape_interval
        self.honor_labels = honor_labels
        self.startup_timeout = startup_timeout
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait until it is ready and every target has been scraped successfully."""
        binary = require_binary("prometheus")
        self._tmp = tempfile.TemporaryDirectory(prefix="test-prometheus-")
        root = Path(self._tmp.name)
        config = root / "prometheus.yml"
        config.write_text(yaml.safe_dump(self._config()))
        self.port = free_port()
        self._log = (root / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(self._ready, timeout=self.startup_timeout, message=f"Prometheus ready at {self.url}")
            wait_until(self._all_targets_up, timeout=self.startup_timeout, message=f"targets up: {self.jobs}")
        except Exception as error:
            report = f"{error}\n{self._target_report()}\n--- prometheus log ---\n{self.log()[-4000:]}"
            self.stop()
            raise RuntimeError(report) from error
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server and delete its storage."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def log(self) -> str:
        """The server's log so far (for failure messages)."""
        if self._tmp is None:
            return ""
        path = Path(self._tmp.name) / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def query(self, expr: str) -> list[Any]:
        """Evaluate an instant query now; return `data.result` (a list of series for vector results)."""
        result: list[Any] = self._api("query", {"query": expr})["result"]
        return result

    def wait_for_data(self, expr: str, *, timeout: float = 30.0) -> list[Any]:
        """Poll an instant query until it returns a non-empty result; return it."""
        return wait_until(lambda: self.query(expr), timeout=timeout, message=f"data for {expr!r}")

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets as reported by /api/v1/targets."""
        active: list[dict[str, Any]] = self._api("targets", {"state": "active"})["activeTargets"]
        return active

    def _config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [
                {"job_name": name, "honor_labels": self.honor_labels, "static_configs": [{"targets": hosts}]}
                for name, hosts in self.jobs.items()
            ],
        }

    def _ready(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise RuntimeError(f"prometheus exited with code {self._process.returncode}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _all_targets_up(self) -> bool:
        expected = sum(len(hosts) for hosts in self.jobs.values())
        active = self.targets()
        return len(active) == expected and all(target["health"] == "up" for target in active)

    def _target_report(self) -> str:
        try:
            targets = self.targets()
        except Exception as error:
            return f"targets: unavailable ({error})"
        lines = [f"{t['labels'].get('job')} {t['scrapeUrl']}: {t['health']} {t['lastError']}" for t in targets]
        return "targets:\n" + "\n".join(lines)

    def _api(self, endpoint: str, params: Mapping[str, str]) -> Any:
        url = f"{self.url}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            with error:
                detail = error.read().decode(errors="replace")
            raise PrometheusQueryError(f"{endpoint} {dict(params)}: HTTP {error.code}: {detail}") from None
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{endpoint} {dict(params)}: {body}")
        return body["data"]


_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::[^}]*)?\}|(\w+))")


def iter_panels(panels: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Every panel of a dashboard's panel list, descending into (collapsed) rows; rows themselves excluded."""
    for panel in panels:
        yield from iter_panels(panel.get("panels", []))
        if panel.get("type") != "row":
            yield panel


def dashboard_queries(
    path: str | Path,
    variables: Mapping[str, str] | None = None,
    *,
    rate_interval: str = "20s",
) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of a dashboard JSON, with Grafana variables substituted.

    `$__rate_interval` becomes `rate_interval`: 20s holds about 20 samples at the tests' 1s scrape
    interval, so a short test workload shows up in rate() soon after it runs and for 20s after.
    Template variables (`$job`, `${job}`) come from `variables`; an unknown one raises KeyError,
    because Prometheus would reject the raw `$name` anyway.
    """
    values = {"__rate_interval": rate_interval, "__interval": "1s", "__range": "5m", **(variables or {})}

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"{path}: no value for dashboard variable ${name}; pass it in `variables`")
        return values[name]

    dashboard = json.loads(Path(path).read_text())
    return [
        (str(panel.get("title", "")), _VARIABLE.sub(substitute, target["expr"]))
        for panel in iter_panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
