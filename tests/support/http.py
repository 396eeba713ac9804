"""A tiny HTTP client for tests that talk to a real API process."""

from __future__ import annotations

from typing import Any

import httpx


class ApiClient:
    def __init__(self, base: str, api_key: str) -> None:
        self.http = httpx.Client(base_url=base, headers={"x-api-key": api_key}, timeout=10)

    def enqueue(self, job_name: str, data: Any, **extra: Any) -> str:
        response = self.http.post("/enqueue", json={"jobName": job_name, "data": data, **extra})
        assert response.status_code == 202, response.text
        return str(response.json()["jobId"])

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def state(self, job_id: str) -> str | None:
        response = self.http.get(f"/jobs/{job_id}")
        return response.json().get("state") if response.status_code == 200 else None

    def close(self) -> None:
        self.http.close()
