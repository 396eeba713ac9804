"""app/api/access_log.py: a key sent in a query string never reaches the access log, however the API starts."""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from app.api.access_log import RedactCredentials, redact_target
from tests.support.services import ROOT, VENV_BIN, RedisServer, Service, free_port, wait_until

LOG_CONFIG = "deploy/uvicorn-logging.json"


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("/jobs?x-api-key=secret", "/jobs?x-api-key=***"),
        ("/jobs?state=failed&X-API-KEY=secret&limit=5", "/jobs?state=failed&X-API-KEY=***&limit=5"),
        ("/jobs?api_key=a&apiKey=b&token=c&access_token=d&password=e&sig=f", None),
        ("/jobs?x%2Dapi%2Dkey=secret", "/jobs?x%2Dapi%2Dkey=***"),
        ("/jobs?state=failed&jobName=emailJob&cursor=abc", "/jobs?state=failed&jobName=emailJob&cursor=abc"),
        ("/jobs/5f0c", "/jobs/5f0c"),
        ("/jobs?x-api-key", "/jobs?x-api-key"),
    ],
)
def test_credentials_lose_their_value_and_the_rest_stays(target: str, logged: str | None) -> None:
    redacted = redact_target(target)
    if logged is None:
        assert all(part.endswith("=***") for part in redacted.partition("?")[2].split("&")), redacted
    else:
        assert redacted == logged


def test_the_filter_rewrites_uvicorns_access_record() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/jobs?x-api-key=secret&state=failed", "1.1", 401), None,
    )  # fmt: skip
    assert RedactCredentials().filter(record) is True
    assert record.getMessage() == '127.0.0.1:5000 - "GET /jobs?x-api-key=***&state=failed HTTP/1.1" 401'


def procfile_command(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.partition(":")[2].strip()
    raise AssertionError(f"the Procfile has no {name} process")


@pytest.mark.slow
def test_the_api_started_as_the_procfile_says_keeps_the_key_out_of_its_log(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "API_PORT": str(port),
        "API_KEY": "the-right-key-0123456789",
        "REDIS_URL": redis_server.url,
        "PYTHONUNBUFFERED": "1",
    }
    api = Service("api", ["/bin/sh", "-c", procfile_command("api")], env, tmp_path / "logs")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(base + "/healthz").status_code == 200, timeout=30, message="the API")
        response = httpx.get(base + "/jobs?state=failed&x-api-key=secret-in-the-url-42")
        assert response.status_code == 401
        line = '"GET /jobs?state=failed&x-api-key=*** HTTP/1.1" 401'
        wait_until(lambda: line in api.log(), message="the access log line")
        assert "secret-in-the-url-42" not in api.log()
    finally:
        api.stop()


def test_every_command_starting_the_api_installs_the_filter() -> None:
    assert json.loads((ROOT / LOG_CONFIG).read_text())["loggers"]["uvicorn.access"]["filters"] == ["redact_credentials"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(re.findall(r"^CMD (.*)$", dockerfile, re.MULTILINE)[-1])
    for where, command in [
        ("Procfile", shlex.split(procfile_command("api"))),
        ("docker-compose.yml", compose["services"]["api"]["command"]),
        ("Dockerfile", cmd),
    ]:
        assert command[command.index("--log-config") + 1] == LOG_CONFIG, where
    # The image has the file where the command looks for it: in its working directory.
    workdir = re.findall(r"^WORKDIR (\S+)", dockerfile, re.MULTILINE)[-1]
    assert re.search(rf"^COPY {LOG_CONFIG} {workdir}/{LOG_CONFIG}$", dockerfile, re.MULTILINE)
    assert f"!{LOG_CONFIG}" in (ROOT / ".dockerignore").read_text().splitlines()


def test_the_log_config_loads_with_dictconfig() -> None:
    # What uvicorn does with --log-config *.json; run apart, so this process's logging stays as it is.
    code = f"import json, logging.config; logging.config.dictConfig(json.load(open({LOG_CONFIG!r})))"
    subprocess.run([str(VENV_BIN / "python"), "-c", code], cwd=ROOT, check=True, timeout=30)
