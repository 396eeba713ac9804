"""Checks of docker-compose.yml, the Dockerfile, .env.example and the deploy files they tie together.

No Docker engine is needed: Debian's `docker-compose` (1.29) validates and interpolates the file, and
the rest reads the files. Entry points are looked up with `importlib.util.find_spec`, which finds a
module without running it, so these tests need no Redis and no settings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager.yml"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
SETTINGS_MODULE = ROOT / "app" / "settings.py"

APP_SERVICES = ("api", "worker", "scheduler", "producer")
# Program -> the distribution in pyproject.toml that installs it (None: the interpreter itself).
ENTRY_PROGRAMS: dict[str, str | None] = {
    "uvicorn": "uvicorn",
    "dramatiq": "dramatiq",
    "periodiq": "periodiq",
    "python": None,
}
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
DURATION_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


# --- Reading the files ------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yml as written (YAML merge keys resolved, ${VAR} not interpolated)."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def service(name: str) -> dict[str, Any]:
    assert name in services(), f"docker-compose.yml has no service {name!r}"
    return services()[name]


def resolve(value: object) -> str:
    """A compose value with each ${VAR:-default} replaced by its default (what runs with no .env)."""
    return VARIABLE.sub(lambda m: (m.group(3) or "") if m.group(2) in (":-", "-") else "", str(value))


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: resolve(value) for key, value in env.items()}


def command(name: str) -> list[str]:
    cmd = service(name).get("command")
    assert isinstance(cmd, list), f"{name}: write `command` as a list (exec form), not {cmd!r}"
    return [str(part) for part in cmd]


def option(cmd: list[str], flag: str) -> str:
    assert flag in cmd, f"{flag} missing from {cmd}"
    return cmd[cmd.index(flag) + 1]


def seconds(duration: str) -> float:
    """A compose duration (`75s`, `1m30s`, `500ms`) in seconds."""
    parts = DURATION_PART.findall(duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a compose duration: {duration!r}"
    return sum(float(number) * DURATION_SECONDS[unit] for number, unit in parts)


def env_example() -> dict[str, str]:
    """VAR=value lines of .env.example (commented-out ones excluded)."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not a VAR=value line: {line!r}"
            values[key.strip()] = value.strip()
    return values


def referenced_variables() -> dict[str, tuple[str, str]]:
    """Every ${VAR} of docker-compose.yml -> (operator, default or message)."""
    lines = [line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    return {m.group(1): (m.group(2) or "", m.group(3) or "") for m in VARIABLE.finditer("\n".join(lines))}


def optional_yaml(path: Path, owner: str) -> Any:
    assert path.exists(), f"{path.relative_to(ROOT)} is missing ({owner} writes it)"
    return yaml.safe_load(path.read_text())


def bind_mounts(name: str) -> Iterator[tuple[str, str]]:
    """(host path, container path) of each bind mount of a service."""
    for volume in service(name).get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                yield volume["source"], volume["target"]
            continue
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/", "~")):
            yield source, target


def mount_target(name: str, host_path: str) -> str:
    targets = [target for source, target in bind_mounts(name) if Path(source) == Path(host_path)]
    assert targets, f"{name} does not mount {host_path}"
    return targets[0]


def host_port(url: str) -> tuple[str, int]:
    match = re.match(r"^[a-z+]+://(?:[^@/]*@)?([^:/]+):(\d+)", url)
    assert match, f"no host:port in {url!r}"
    return match.group(1), int(match.group(2))


# --- docker-compose itself --------------------------------------------------------------------


def docker_compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    program = require_tool("docker-compose", "docker-compose")
    # .env.example as the env file: what a fresh `cp .env.example .env` gives, whatever .env holds.
    return subprocess.run(
        [program, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def base_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in referenced_variables()}


def test_compose_file_is_valid_with_an_api_key() -> None:
    result = docker_compose("config", "-q", env={**base_environment(), "API_KEY": "test-key"})
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_api_key() -> None:
    result = docker_compose("config", "-q", env=base_environment())
    assert result.returncode != 0
    assert "API_KEY" in result.stderr and ".env.example" in result.stderr, result.stderr


def test_compose_resolves_replicas_and_environment() -> None:
    env = {**base_environment(), "API_KEY": "test-key"}
    result = docker_compose("config", env=env)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert resolved["worker"]["deploy"]["replicas"] == 3
    assert resolved["worker"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert resolved["api"]["environment"]["API_KEY"] == "test-key"


# --- Images and entry points ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(services()))
def test_image_is_pinned(name: str) -> None:
    definition = service(name)
    image = str(definition.get("image", ""))
    if "build" in definition:
        build = definition["build"]
        build = build if isinstance(build, dict) else {"context": build}
        assert build["context"] == ".", f"{name}: build the repository root"
        assert (ROOT / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
    assert image, f"{name}: name the image (built services share one, so it is built once per tag)"
    repository, _, tag = image.split("@")[0].rpartition("/")[2].partition(":")
    assert tag and tag != "latest", f"{name}: pin {image!r} to an exact version tag"
    if "build" not in definition:
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{name}: {image!r} is not pinned to a patch version"


@pytest.mark.parametrize("name", [name for name in APP_SERVICES if name in services()])
def test_command_is_a_real_entry_point(name: str) -> None:
    cmd = command(name)
    program = cmd[0]
    assert program in ENTRY_PROGRAMS, f"{name}: unknown program {program!r}"
    distribution = ENTRY_PROGRAMS[program]
    if distribution:
        dependencies = (ROOT / "pyproject.toml").read_text()
        assert re.search(rf'"{distribution}[\[<>=~!;" ]', dependencies), f"{distribution} not a dependency"
    if program == "uvicorn":
        module, _, attribute = cmd[1].partition(":")
        assert attribute, f"{name}: uvicorn needs module:attribute, not {cmd[1]!r}"
    elif program == "python":
        module = option(cmd, "-m")
    else:
        module = cmd[1]
    assert importlib.util.find_spec(module) is not None, f"{name}: no module {module!r} to run"


def test_api_command_is_the_image_default() -> None:
    cmd_lines = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD ")]
    assert cmd_lines, "Dockerfile has no CMD"
    assert json.loads(cmd_lines[-1][len("CMD ") :]) == command("api")


# --- The worker and the shutdown chain --------------------------------------------------------


def test_worker_replicas_restart_and_scaling() -> None:
    worker = service("worker")
    assert worker.get("deploy", {}).get("replicas") == 3
    assert worker.get("restart") in ("always", "unless-stopped", "on-failure") or worker.get("deploy", {}).get(
        "restart_policy"
    ), "worker needs a restart policy"
    # `docker compose up --scale worker=N` fails on a fixed name or a fixed host port.
    assert "container_name" not in worker
    assert "ports" not in worker, "publish no worker port: Prometheus reaches each replica on the network"


def test_shutdown_chain_lets_running_jobs_finish() -> None:
    grace_s = seconds(str(service("worker")["stop_grace_period"]))
    shutdown_s = int(option(command("worker"), "--worker-shutdown-timeout")) / 1000
    job_limit_s = int(environment("worker")["JOB_TIME_LIMIT_MS"]) / 1000
    assert grace_s > shutdown_s > job_limit_s, (
        f"need stop_grace_period ({grace_s}s) > --worker-shutdown-timeout ({shutdown_s}s) "
        f"> JOB_TIME_LIMIT_MS ({job_limit_s}s), or `docker compose stop` SIGKILLs running jobs"
    )
    api_grace_s = seconds(str(service("api")["stop_grace_period"]))
    assert api_grace_s > int(option(command("api"), "--timeout-graceful-shutdown"))


def test_worker_metrics_dir_is_private_to_each_replica() -> None:
    metrics_dir = environment("worker")["METRICS_DIR"]
    worker = service("worker")
    tmpfs = [str(entry).split(":")[0] for entry in worker.get("tmpfs", [])]
    tmpfs += [v["target"] for v in worker.get("volumes", []) if isinstance(v, dict) and v.get("type") == "tmpfs"]
    assert metrics_dir in tmpfs, f"mount a tmpfs at METRICS_DIR={metrics_dir}, never a shared volume"


def test_exactly_one_scheduler() -> None:
    scheduler = service("scheduler")
    assert scheduler.get("deploy", {}).get("replicas", 1) == 1, "periodiq has no lock: run one scheduler"
    # periodiq sets no SIGTERM handler, and PID 1 ignores a signal it has no handler for.
    assert scheduler.get("stop_signal") == "SIGINT"
    assert "TZ" in environment("scheduler"), "periodiq fires cron specs in the container's local time"


def test_producer_runs_only_on_request() -> None:
    assert service("producer").get("profiles") == ["producer"]


# --- Wiring between services ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(services()))
def test_depends_on_waits_for_healthy_services(name: str) -> None:
    depends_on = service(name).get("depends_on") or {}
    assert isinstance(depends_on, dict), f"{name}: plain depends_on starts before the dependency is ready"
    for dependency, condition in depends_on.items():
        assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}: use service_healthy"
        assert "healthcheck" in service(dependency), f"{dependency} needs a healthcheck to be waited for"


@pytest.mark.parametrize("name", sorted(services()))
def test_bind_mounted_paths_exist(name: str) -> None:
    for source, _ in bind_mounts(name):
        assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"


@pytest.mark.parametrize("name", [name for name in APP_SERVICES if name in services()])
def test_urls_in_environment_name_compose_services(name: str) -> None:
    for key, value in environment(name).items():
        if "://" in value:
            host, _ = host_port(value)
            assert host in services(), f"{name}: {key}={value} names no service of docker-compose.yml"


def test_redis_keeps_every_acknowledged_enqueue() -> None:
    redis = service("redis")
    cmd = " ".join(redis["command"]) if isinstance(redis["command"], list) else redis["command"]
    assert "--appendonly yes" in cmd and "--appendfsync always" in cmd
    assert any(str(volume).endswith(":/data") for volume in redis.get("volumes", [])), "keep /data in a volume"


def test_api_port_agrees_everywhere() -> None:
    port = int(option(command("api"), "--port"))
    assert [str(p) for p in service("api")["ports"]] == [f"${{API_PORT:-{port}}}:{port}"]
    assert env_example()["API_PORT"] == str(port)
    assert f"127.0.0.1:{port}/readyz" in " ".join(service("api")["healthcheck"]["test"])


def test_worker_metrics_port_agrees_everywhere() -> None:
    port = environment("worker")["METRICS_PORT"]
    assert [str(p) for p in service("worker").get("expose", [])] == [port]
    assert f"127.0.0.1:{port}/metrics" in " ".join(service("worker")["healthcheck"]["test"])


def test_prometheus_scrapes_what_compose_runs() -> None:
    config = optional_yaml(PROMETHEUS_CONFIG, "the monitoring helper")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api_port = option(command("api"), "--port")
    api_targets = [t for static in jobs["api"]["static_configs"] for t in static["targets"]]
    assert api_targets == [f"api:{api_port}"]
    (worker_sd,) = jobs["worker"]["dns_sd_configs"]
    assert worker_sd["names"] == ["worker"], "one target per replica via Docker DNS"
    assert str(worker_sd["port"]) == environment("worker")["METRICS_PORT"]
    for alerting in config.get("alerting", {}).get("alertmanagers", []):
        for static in alerting.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.partition(":")
                assert host in services() and port == "9093", target


def test_prometheus_finds_its_rule_files() -> None:
    config = optional_yaml(PROMETHEUS_CONFIG, "the monitoring helper")
    config_target = Path(mount_target("prometheus", "./deploy/prometheus.yml"))
    alerts_target = Path(mount_target("prometheus", "./deploy/alerts"))
    for pattern in config.get("rule_files", []):
        in_container = config_target.parent / pattern
        assert in_container.parent == alerts_target, f"rule_files {pattern} is not under {alerts_target}"
        assert list((ROOT / "deploy" / "alerts").glob(in_container.name)), f"no file matches {pattern}"


def test_grafana_provisioning_matches_the_mounts() -> None:
    assert GRAFANA_PROVISIONING.exists(), "deploy/grafana/provisioning is missing"
    dashboards_target = mount_target("grafana", "./deploy/grafana/dashboards")
    for provider_file in (GRAFANA_PROVISIONING / "dashboards").glob("*.y*ml"):
        for provider in yaml.safe_load(provider_file.read_text()).get("providers", []):
            assert provider["options"]["path"] == dashboards_target, provider_file.name
    for datasource_file in (GRAFANA_PROVISIONING / "datasources").glob("*.y*ml"):
        for datasource in yaml.safe_load(datasource_file.read_text()).get("datasources", []):
            host, port = host_port(datasource["url"])
            assert host in services(), f"{datasource_file.name}: no service {host}"
            container_ports = {str(p).rsplit(":", 1)[-1] for p in service(host).get("ports", [])}
            assert str(port) in container_ports, f"{datasource_file.name}: {host} does not listen on {port}"


def test_alertmanager_config_routes_to_a_defined_receiver() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    names = {receiver["name"] for receiver in config["receivers"]}
    routes = [config["route"], *config["route"].get("routes", [])]
    assert all(route.get("receiver", config["route"]["receiver"]) in names for route in routes)


def test_amtool_accepts_the_alertmanager_config() -> None:
    amtool = require_tool("amtool", "prometheus-alertmanager")
    result = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER_CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- .env.example -----------------------------------------------------------------------------


def test_env_example_lists_every_compose_variable() -> None:
    example = env_example()
    missing = sorted(set(referenced_variables()) - set(example))
    assert not missing, f"add to .env.example, with a comment: {missing}"


def test_env_example_values_are_the_compose_defaults() -> None:
    example = env_example()
    for name, (operator, default) in referenced_variables().items():
        if operator == ":?":
            assert example.get(name) == "", f"{name} is a required secret: leave it blank in .env.example"
        elif operator == ":-":
            assert example.get(name) == default, f"{name}: .env.example says {example.get(name)!r}, compose {default!r}"


def test_env_example_documents_every_setting_of_the_app() -> None:
    # env.get("NAME", ...) and reader.integer("NAME", ...): the names the settings object reads.
    read = set(re.findall(r'\.\w+\(\s*"([A-Z][A-Z0-9_]+)"', SETTINGS_MODULE.read_text()))
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    missing = sorted(read - documented)
    assert not missing, f"app/settings.py reads {missing}: document them in .env.example"


# --- Dockerfile -------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_base_image_is_pinned() -> None:
    bases = [argument.split()[0] for keyword, argument in dockerfile_instructions() if keyword == "FROM"]
    assert bases, "Dockerfile has no FROM"
    for base in bases:
        tag = base.split("@")[0].partition(":")[2]
        assert re.match(r"\d+\.\d+\.\d+", tag), f"pin {base} to an exact patch version"


def test_dockerfile_runs_as_non_root_with_exec_form() -> None:
    instructions = dockerfile_instructions()
    users = [argument for keyword, argument in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "end with a non-root USER"
    for keyword, argument in instructions:
        if keyword in ("CMD", "ENTRYPOINT"):
            assert isinstance(json.loads(argument), list), f"{keyword} must be exec form (a JSON array)"
    assert any(keyword == "ENV" and "PYTHONUNBUFFERED=1" in argument for keyword, argument in instructions)


def test_dockerfile_installs_dependencies_before_copying_the_code() -> None:
    copies = [argument for keyword, argument in dockerfile_instructions() if keyword == "COPY"]
    first_pyproject = next(i for i, argument in enumerate(copies) if "pyproject.toml" in argument)
    first_code = next(i for i, argument in enumerate(copies) if argument.split()[0].rstrip("/") == "app")
    assert first_pyproject < first_code, "copy pyproject.toml and install dependencies before app/"


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    if "*" in rules:
        assert {"!pyproject.toml", "!README.md"} <= set(rules) and ({"!app", "!app/"} & set(rules))
        assert not {"!.env", "!.venv", "!.git", "!var"} & set(rules)
    else:
        assert {".env", ".venv", ".git", "var"} <= {rule.rstrip("/") for rule in rules}
