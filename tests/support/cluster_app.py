"""What the in-process tests of the API and the console on a Redis Cluster share: one cluster for
the module, two queues on different masters (aJob's and bJob's), an empty cluster for each test,
and settings under a namespace of the test's own. Imported by those modules as fixtures."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.jobs import JobRegistry, JobType
from app.settings import Settings
from tests.support.any_jobs import AnyData
from tests.support.cluster import ClusterDeployment, running_cluster, tags_on_different_masters

CANDIDATE_QUEUES = ["mail", "reports", "webhooks", "billing", "exports", "images", "search", "audit"]
_namespaces = itertools.count()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDeployment]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as made:
        yield made


@pytest.fixture(scope="module")
def queues(cluster: ClusterDeployment) -> tuple[str, str]:
    """Two queues whose keys are on different masters: aJob's and bJob's."""
    return tags_on_different_masters(cluster, CANDIDATE_QUEUES)


@pytest.fixture(autouse=True)
def empty_cluster(cluster: ClusterDeployment) -> None:
    """Each test starts on an empty cluster (Dramatiq's queue keys are not under our namespace)."""
    for node in cluster.nodes:
        with node.client() as client:
            client.flushall()


@pytest.fixture
def registry(queues: tuple[str, str]) -> JobRegistry:
    job_types = JobRegistry()
    for name, queue in zip(("aJob", "bJob"), queues, strict=True):
        job_types.add(JobType(name=name, schema=AnyData, fn=lambda job_id, data, context: None, queue=queue))
    return job_types


def cluster_settings(cluster: ClusterDeployment, tmp_path: Path, *, api_key: str, prefix: str) -> Settings:
    """The cluster's settings, under a namespace of the test's own (and no schedules)."""
    schedules = tmp_path / "schedules.toml"
    schedules.write_text("")
    return Settings.from_env(
        {
            **cluster.env(),
            "API_KEY": api_key,
            "TASKQUEUE_NAMESPACE": f"{prefix}{next(_namespaces)}",
            "SCHEDULES_FILE": str(schedules),
        }
    )
