"""Checks of the Kubernetes manifests in deploy/kubernetes/, offline: no cluster, no network.

Core objects are validated with kubernetes-validate against the schemas it ships for one fixed
Kubernetes version, in strict mode (an unknown field is an error, as `kubectl apply
--validate=strict` makes it). The KEDA ScaledObject and the ServiceMonitor are validated against
the OpenAPI schemas of their upstream CRDs, vendored in tests/deploy/schemas/ (see its README),
made strict the same way. The rest checks what the objects must agree on with each other and with
the app: selectors and labels, probe paths and ports, the shutdown chain, settings names, the image.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = MANIFESTS / "kustomization.yaml"
SECRET_TEMPLATE = MANIFESTS / "secret.example.yaml"
REDIS_EXAMPLE = MANIFESTS / "redis-example" / "redis.yaml"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
SETTINGS_MODULE = ROOT / "app" / "settings.py"
HTTP_MODULE = ROOT / "app" / "http.py"
API_METRICS = ROOT / "app" / "api" / "queue_metrics.py"
WORKER_METRICS = ROOT / "app" / "middleware" / "metrics.py"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"

#: The Kubernetes version the core objects are validated against: the oldest we support.
KUBERNETES_VERSION = "1.31.0"
#: Custom resources: (apiVersion, kind) -> the vendored openAPIV3Schema of its CRD version.
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects_v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors_v1.json",
}
#: Environment variables the manifests may set although app/settings.py does not read them.
NOT_SETTINGS = {"TZ": "the C library's time zone, which periodiq's cron specs use"}
#: The keys of the Secret a pod cannot start without.
REQUIRED_SECRET_KEYS = {"API_KEY", "WEBHOOK_SECRET", "REDIS_URL"}
SECRET_NAME = "taskqueue-secrets"
APP_IMAGE = "taskqueue"
APP_COMPONENTS = ("api", "worker", "scheduler")


# --- Reading the files ------------------------------------------------------------------------


def load_documents(path: Path) -> list[dict[str, Any]]:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for doc in documents:
        assert isinstance(doc, dict) and "kind" in doc, f"{path.name}: every document is a Kubernetes object"
    return documents


@cache
def kustomization() -> dict[str, Any]:
    data = yaml.safe_load(KUSTOMIZATION.read_text())
    assert data["kind"] == "Kustomization"
    return data


@cache
def applied() -> tuple[dict[str, Any], ...]:
    """Every object `kubectl apply -k deploy/kubernetes` creates, as written (before kustomize)."""
    return tuple(doc for name in kustomization()["resources"] for doc in load_documents(MANIFESTS / name))


def every_object() -> list[tuple[str, dict[str, Any]]]:
    """(file, object) for every manifest in the folder, applied by default or not."""
    paths = sorted(path for path in MANIFESTS.rglob("*.yaml") if path != KUSTOMIZATION)
    return [(str(path.relative_to(MANIFESTS)), doc) for path in paths for doc in load_documents(path)]


def object_id(item: tuple[str, dict[str, Any]]) -> str:
    path, doc = item
    return f"{path}:{doc['kind']}/{doc['metadata']['name']}"


def find(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [doc for doc in applied() if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = find(kind, name)
    return found


def workload(component: str) -> dict[str, Any]:
    (found,) = [
        doc
        for doc in find("Deployment")
        if doc["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    return found


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec(doc)["containers"]
    return only


def workloads() -> list[dict[str, Any]]:
    return [doc for _, doc in every_object() if doc["kind"] in ("Deployment", "StatefulSet")]


def app_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for component in APP_COMPONENTS:
        yield component, container(workload(component))


def env_value(item: dict[str, Any], name: str) -> str:
    (value,) = [entry["value"] for entry in item.get("env", []) if entry["name"] == name]
    return str(value)


def config_map() -> dict[str, str]:
    return one("ConfigMap", "taskqueue-config")["data"]


def option(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a set of labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


def pods_selected(selector: dict[str, Any]) -> list[dict[str, Any]]:
    """The workloads whose pods a selector (a Service's plain map, or a label selector) selects."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    return [doc for doc in workloads() if matches(selector, doc["spec"]["template"]["metadata"]["labels"])]


def named_port(doc: dict[str, Any], port: int | str) -> int:
    """A container port of a workload by name or number."""
    ports = {p["name"]: p["containerPort"] for c in pod_spec(doc)["containers"] for p in c.get("ports", [])}
    if isinstance(port, int):
        assert port in ports.values(), f"{doc['metadata']['name']} has no container port {port}"
        return port
    assert port in ports, f"{doc['metadata']['name']} has no container port named {port!r}"
    return ports[port]


@cache
def settings_names() -> frozenset[str]:
    """Every environment variable app/settings.py reads: env.get("NAME"...) and reader.kind("NAME"...)."""
    names = re.findall(r'(?:\breader\.\w+|\benv\.get)\(\s*"([A-Z][A-Z0-9_]+)"', SETTINGS_MODULE.read_text())
    assert "REDIS_URL" in names and "API_KEY" in names, "the settings parser no longer finds the settings"
    return frozenset(names)


@cache
def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@cache
def dockerfile_cmd() -> list[str]:
    (line,) = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD ")]
    return json.loads(line.removeprefix("CMD "))


def dockerfile_user() -> tuple[int, int]:
    (line,) = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("USER ")]
    user, _, group = line.split()[1].partition(":")
    return int(user), int(group or user)


# --- Schemas ----------------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """A copy of a CRD schema in which every object with listed properties allows only those.

    The API server prunes unknown fields of a custom resource (and `--validate=strict` refuses
    them); a plain JSON Schema validator would let a misspelt field pass unnoticed.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    made = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in made
        and "additionalProperties" not in made
        and not made.get("x-kubernetes-preserve-unknown-fields")
    ):
        made["additionalProperties"] = False
    return made


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[(api_version, kind)]).read_text())
    # The CRD schema leaves metadata open (the API server checks it): hold it to the usual fields.
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    schema = strict(schema)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def crd_errors(doc: dict[str, Any]) -> list[str]:
    validator = crd_validator(doc["apiVersion"], doc["kind"])
    errors = validator.iter_errors(doc)
    return [f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}" for error in errors]


def is_custom(doc: dict[str, Any]) -> bool:
    return (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS


# --- The folder and the kustomization ---------------------------------------------------------


def test_kustomization_applies_every_manifest_but_the_template_and_the_example() -> None:
    listed = set(kustomization()["resources"])
    present = {path.name for path in MANIFESTS.glob("*.yaml")} - {KUSTOMIZATION.name, SECRET_TEMPLATE.name}
    assert listed == present, f"kustomization.yaml lists {sorted(listed)}, the folder holds {sorted(present)}"
    assert SECRET_TEMPLATE.name not in listed, "the Secret is a template: never apply it from the repository"
    assert not any(name.startswith("redis-example") for name in listed), "the example Redis is applied by hand only"


def test_kustomize_builds_the_objects_into_the_namespace_with_the_registry_image() -> None:
    # kubectl's built-in kustomize, where there is one (it needs no cluster and no network).
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the build of kustomization.yaml is not checked")
    built = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert built.returncode == 0, built.stderr
    objects = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in objects) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in applied()
    )
    (entry,) = kustomization()["images"]
    for doc in objects:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == kustomization()["namespace"], doc["metadata"]["name"]
        if doc["kind"] == "Deployment":
            assert container(doc)["image"] == f"{entry['newName']}:{entry['newTag']}"


def test_everything_lands_in_one_namespace() -> None:
    namespace = kustomization()["namespace"]
    assert [doc["metadata"]["name"] for doc in find("Namespace")] == [namespace]
    for doc in applied():
        assert "namespace" not in doc["metadata"], f"{doc['kind']}/{doc['metadata']['name']}: kustomize sets it"


# --- Schemas ----------------------------------------------------------------------------------


@pytest.mark.parametrize("item", [item for item in every_object() if not is_custom(item[1])], ids=object_id)
def test_core_object_is_valid_for_the_kubernetes_version(item: tuple[str, dict[str, Any]]) -> None:
    path, doc = item
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as error:
        pytest.fail(f"{object_id(item)}: {error.message} (a custom resource? vendor its CRD schema)")
    except kubernetes_validate.ValidationError as error:
        where = ".".join(map(str, error.path))
        pytest.fail(f"{object_id(item)} is invalid for Kubernetes {KUBERNETES_VERSION}: {where}: {error.message}")


@pytest.mark.parametrize("item", [item for item in every_object() if is_custom(item[1])], ids=object_id)
def test_custom_resource_is_valid_for_its_crd(item: tuple[str, dict[str, Any]]) -> None:
    errors = crd_errors(item[1])
    assert not errors, f"{object_id(item)} does not match its CRD schema:\n" + "\n".join(errors)


def test_vendored_schemas_name_their_source() -> None:
    # A custom kind without a vendored schema fails above: kubernetes-validate finds no schema for it.
    notes = (SCHEMAS / "README.md").read_text()
    for name in CRD_SCHEMAS.values():
        assert (SCHEMAS / name).exists() and name in notes, f"tests/deploy/schemas/README.md: the source of {name}"


def test_strict_validation_catches_a_misspelt_field() -> None:
    scaled = copy.deepcopy(one("ScaledObject", "taskqueue-worker"))
    scaled["spec"]["minReplicaCont"] = scaled["spec"].pop("minReplicaCount")
    assert any("minReplicaCont" in error for error in crd_errors(scaled))
    deployment = copy.deepcopy(workload("worker"))
    container(deployment)["terminationGracePeriod"] = 75
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# --- Labels, selectors, ports -----------------------------------------------------------------


@pytest.mark.parametrize("doc", workloads(), ids=lambda doc: doc["metadata"]["name"])
def test_workload_selector_matches_its_pod_labels(doc: dict[str, Any]) -> None:
    assert matches(doc["spec"]["selector"], doc["spec"]["template"]["metadata"]["labels"])
    name = doc["metadata"]["name"]
    others = [other["metadata"]["name"] for other in pods_selected(doc["spec"]["selector"])]
    others.remove(name)
    assert not others, f"{name}'s selector also selects the pods of {others}"


@pytest.mark.parametrize(
    "service", [doc for _, doc in every_object() if doc["kind"] == "Service"], ids=lambda d: d["metadata"]["name"]
)
def test_service_selects_one_workload_and_targets_its_ports(service: dict[str, Any]) -> None:
    selected = pods_selected(service["spec"]["selector"])
    assert len(selected) == 1, f"{service['metadata']['name']} selects {[d['metadata']['name'] for d in selected]}"
    for port in service["spec"]["ports"]:
        named_port(selected[0], port["targetPort"])


@pytest.mark.parametrize("pdb", find("PodDisruptionBudget"), ids=lambda doc: doc["metadata"]["name"])
def test_disruption_budget_covers_a_workload_that_can_spare_a_pod(pdb: dict[str, Any]) -> None:
    (selected,) = pods_selected(pdb["spec"]["selector"])
    component = selected["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
    assert component != "scheduler", "a budget for the single scheduler would block every node drain"
    if "minAvailable" in pdb["spec"]:
        assert selected["spec"]["replicas"] > pdb["spec"]["minAvailable"], "the budget would block every eviction"


def test_api_probes_are_routes_of_the_app_on_its_port() -> None:
    api = workload("api")
    item = container(api)
    assert item["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert item["livenessProbe"]["httpGet"]["path"] == "/healthz"
    routes = set(re.findall(r'Route\(\s*"([^"]+)"', HTTP_MODULE.read_text()))
    port = int(option(dockerfile_cmd(), "--port"))
    assert port == 3002
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = item[probe]["httpGet"]
        assert get["path"] in routes, f"app/http.py has no route {get['path']}"
        assert named_port(api, get["port"]) == port, f"the API's {probe} is not on the port uvicorn listens on"
    assert "command" not in item and "args" not in item, "the API runs the Dockerfile's CMD, as compose does"
    service = one("Service", "taskqueue-api")
    assert [named_port(api, p["targetPort"]) for p in service["spec"]["ports"]] == [port]


def test_worker_probes_and_scrape_port_are_its_metrics_port() -> None:
    worker = workload("worker")
    item = container(worker)
    port = int(env_value(item, "METRICS_PORT"))
    assert env_value(item, "METRICS_HOST") == "0.0.0.0", "probes and Prometheus reach the pod IP, not loopback"
    for probe in ("livenessProbe", "startupProbe"):
        assert item[probe]["httpGet"]["path"] == "/metrics"
        assert named_port(worker, item[probe]["httpGet"]["port"]) == port
    assert "readinessProbe" not in item, "a worker serves no traffic: readiness would mean nothing"


@pytest.mark.parametrize("component", APP_COMPONENTS)
def test_scrape_annotations_name_a_container_port(component: str) -> None:
    doc = workload(component)
    annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
    if component == "scheduler":
        assert "prometheus.io/scrape" not in annotations, "periodiq serves no metrics"
        return
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    named_port(doc, int(annotations["prometheus.io/port"]))


def test_service_monitor_scrapes_the_api_and_every_worker() -> None:
    monitor = one("ServiceMonitor", "taskqueue")
    services = [doc for doc in find("Service") if matches(monitor["spec"]["selector"], doc["metadata"]["labels"])]
    assert {doc["metadata"]["name"] for doc in services} == {"taskqueue-api", "taskqueue-worker-metrics"}
    endpoint_ports = {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]}
    for service in services:
        assert endpoint_ports & {port["name"] for port in service["spec"]["ports"]}, service["metadata"]["name"]
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["path"] == "/metrics"
        assert endpoint["honorLabels"] is True, "our `job` label (the job type) must not become exported_job"
    assert one("Service", "taskqueue-worker-metrics")["spec"]["clusterIP"] == "None", "one target per worker pod"
    job_label = monitor["spec"]["jobLabel"]
    assert {service["metadata"]["labels"][job_label] for service in services} == {"api", "worker"}


# --- Shutdown ---------------------------------------------------------------------------------


def test_worker_shutdown_chain_lets_running_jobs_finish() -> None:
    worker = workload("worker")
    item = container(worker)
    grace = pod_spec(worker)["terminationGracePeriodSeconds"]
    shutdown_s = int(option(item["command"], "--worker-shutdown-timeout")) / 1000
    job_limit_s = int(config_map()["JOB_TIME_LIMIT_MS"]) / 1000
    assert grace > shutdown_s > job_limit_s, (
        f"need terminationGracePeriodSeconds ({grace}) > --worker-shutdown-timeout ({shutdown_s} s) "
        f"> JOB_TIME_LIMIT_MS ({job_limit_s} s)"
    )
    assert item["command"][:2] == ["dramatiq", "app.actors"], "exec form: dramatiq is PID 1 and gets SIGTERM"
    assert "preStop" not in item.get("lifecycle", {}), "SIGTERM drains the worker (app/middleware/drain.py)"


def test_api_grace_period_outlasts_its_graceful_shutdown() -> None:
    api = workload("api")
    pause = container(api)["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    graceful = int(option(dockerfile_cmd(), "--timeout-graceful-shutdown"))
    assert pod_spec(api)["terminationGracePeriodSeconds"] > int(pause[1]) + graceful


def test_exactly_one_scheduler_that_stops_on_sigint() -> None:
    scheduler = workload("scheduler")
    assert scheduler["spec"]["replicas"] == 1, "periodiq has no lock: a second scheduler sends every tick twice"
    assert scheduler["spec"]["strategy"] == {"type": "Recreate"}, "a rolling update would run two for a moment"
    item = container(scheduler)
    assert item["command"] == ["periodiq", "app.actors"]
    hook = shlex.split(item["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert hook == ["kill", "-INT", "1"], "periodiq as PID 1 ignores SIGTERM; SIGINT stops it"
    targets = [doc["spec"]["scaleTargetRef"]["name"] for doc in find("ScaledObject")]
    assert scheduler["metadata"]["name"] not in targets, "never scale the scheduler"


# --- Settings and secrets ---------------------------------------------------------------------


def env_names(item: dict[str, Any]) -> set[str]:
    names = {entry["name"] for entry in item.get("env", [])}
    for source in item.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(one("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            pytest.fail(f"envFrom {source}: import only the ConfigMap, name each secret key")
    return names


@pytest.mark.parametrize("component", APP_COMPONENTS)
def test_every_environment_variable_is_a_setting_of_the_app(component: str) -> None:
    unknown = env_names(container(workload(component))) - settings_names() - set(NOT_SETTINGS)
    assert not unknown, f"{component}: app/settings.py reads no {sorted(unknown)} (a typo, or a setting gone)"


def test_config_map_holds_settings_and_no_secrets() -> None:
    data = config_map()
    assert set(data) <= settings_names(), f"not settings: {sorted(set(data) - settings_names())}"
    template_keys = set(load_documents(SECRET_TEMPLATE)[0]["stringData"])
    assert not set(data) & template_keys, "a secret in the ConfigMap"
    assert all(isinstance(value, str) for value in data.values()), "ConfigMap values are strings: quote numbers"


def secret_refs() -> Iterator[tuple[str, dict[str, Any]]]:
    for component, item in app_containers():
        for entry in item.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] == entry["name"], f"{component}: {entry['name']} from key {ref['key']}"
                yield component, ref


def test_secrets_come_from_the_secret_and_only_the_optional_ones_are_optional() -> None:
    (template,) = load_documents(SECRET_TEMPLATE)
    assert template["kind"] == "Secret" and template["metadata"]["name"] == SECRET_NAME
    keys = set(template["stringData"])
    assert keys <= settings_names()
    assert keys >= REQUIRED_SECRET_KEYS
    used = set()
    for component, ref in secret_refs():
        assert ref["name"] == SECRET_NAME, component
        assert ref["key"] in keys, f"{component} reads {ref['key']}, which the template does not document"
        assert ref.get("optional", False) == (ref["key"] not in REQUIRED_SECRET_KEYS), f"{component}: {ref['key']}"
        used.add(ref["key"])
    assert used == keys, f"the template documents keys no pod reads: {sorted(keys - used)}"
    needs = {"api": {"API_KEY", "REDIS_URL"}, "worker": {"WEBHOOK_SECRET", "REDIS_URL"}, "scheduler": {"REDIS_URL"}}
    for component, item in app_containers():
        assert needs[component] <= env_names(item), f"{component} lacks {sorted(needs[component] - env_names(item))}"


def test_secret_template_holds_no_real_secret() -> None:
    (template,) = load_documents(SECRET_TEMPLATE)
    assert "data" not in template, "no base64 values: the template shows placeholders only"
    for key, value in template["stringData"].items():
        assert value == "" or "<" in value, f"{key}: a placeholder (<...>) or empty, never a real value"
    assert not find("Secret"), "no Secret is applied from the repository"


# --- Image and pods ---------------------------------------------------------------------------


def test_every_app_container_runs_the_image_of_this_version() -> None:
    version = project_version()
    for component, item in app_containers():
        assert item["image"] == f"{APP_IMAGE}:{version}", f"{component}: {item['image']}"
    (entry,) = [image for image in kustomization()["images"] if image["name"] == APP_IMAGE]
    assert entry["newTag"] == version, "kustomization.yaml's tag is the version in pyproject.toml"
    assert entry["newTag"] != "latest"
    assert version in KUSTOMIZATION.read_text().split("docker build", 1)[1].splitlines()[0], "the build command"


def test_example_redis_is_the_image_and_options_of_compose() -> None:
    redis = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["redis"]
    (statefulset,) = [doc for doc in load_documents(REDIS_EXAMPLE) if doc["kind"] == "StatefulSet"]
    item = container(statefulset)
    assert item["image"] == redis["image"]
    assert item["command"] == redis["command"], "AOF with appendfsync always, noeviction"
    assert "NOT FOR PRODUCTION" in REDIS_EXAMPLE.read_text()


@pytest.mark.parametrize("doc", workloads(), ids=lambda doc: doc["metadata"]["name"])
def test_pods_run_locked_down(doc: dict[str, Any]) -> None:
    spec = pod_spec(doc)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False, "nothing here talks to the Kubernetes API"
    for item in spec["containers"]:
        context = item["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(item["resources"]["requests"]), item["name"]
        assert "memory" in item["resources"]["limits"], item["name"]
        assert item["image"].rpartition(":")[2] not in ("", "latest"), item["image"]


@pytest.mark.parametrize("component", APP_COMPONENTS)
def test_app_pods_run_as_the_dockerfile_user_with_writable_scratch(component: str) -> None:
    doc = workload(component)
    context = pod_spec(doc)["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == dockerfile_user()
    mounts = {mount["mountPath"] for mount in container(doc).get("volumeMounts", [])}
    assert "/tmp" in mounts, "the root filesystem is read-only"
    if component == "worker":
        metrics_dir = env_value(container(doc), "METRICS_DIR")
        assert any(metrics_dir.startswith(path + "/") for path in mounts), "METRICS_DIR must be on a pod volume"


# --- KEDA -------------------------------------------------------------------------------------


def test_scaled_object_scales_the_worker_deployment() -> None:
    (scaled,) = find("ScaledObject")
    worker = workload("worker")
    target = scaled["spec"]["scaleTargetRef"]
    assert (target.get("apiVersion", "apps/v1"), target.get("kind", "Deployment"), target["name"]) == (
        "apps/v1",
        "Deployment",
        worker["metadata"]["name"],
    )
    assert "replicas" not in worker["spec"], "the autoscaler sets it; `kubectl apply` would reset it"
    assert scaled["spec"]["minReplicaCount"] >= 1, "workers move delayed jobs to their queue: never scale to 0"
    assert scaled["spec"]["maxReplicaCount"] > scaled["spec"]["minReplicaCount"]
    assert scaled["spec"]["fallback"]["replicas"] >= scaled["spec"]["minReplicaCount"]


def test_scaled_object_query_uses_metrics_the_app_exports() -> None:
    (scaled,) = find("ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    exporters = {"taskqueue_queue_depth": API_METRICS, "taskqueue_jobs_in_progress": WORKER_METRICS}
    used = set(re.findall(r"\btaskqueue_\w+", query))
    assert "taskqueue_queue_depth" in used
    for metric in used:
        assert metric in exporters, f"{metric}: not a metric this test knows an exporter of"
        assert f'"{metric}"' in exporters[metric].read_text(), f"{exporters[metric].name} no longer exports {metric}"
    assert re.search(r'taskqueue_queue_depth\{state="ready"\}', query)
    assert '"ready"' in API_METRICS.read_text(), "taskqueue_queue_depth has no state ready any more"
    # Each API replica exports the same Redis figures: a plain sum would count them once per pod.
    assert re.search(r"max by \(queue\) \(taskqueue_queue_depth", query), "deduplicate the API replicas"
    assert trigger["metadata"]["ignoreNullValues"] == "false", "missing series must mean fallback, not 0"
    assert float(trigger["metadata"]["threshold"]) > 0
