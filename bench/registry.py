"""The benchmark's own job type registry (never the production one), shared by bench.ours and the
modules it imports from JOB_MODULES (bench.flow)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from app.jobs import JobRegistry

BENCH_JOBS = JobRegistry()


class NoData(BaseModel):
    model_config = ConfigDict(extra="forbid")
