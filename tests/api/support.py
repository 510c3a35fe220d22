"""Helpers of the API tests (fixtures are in conftest.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from pipelines.api.state import ApiState
from pipelines.services.runtime import Runtime
from pipelines.settings import Settings
from tests.support import quick_model as shared_quick_model

PEOPLE, PER_PERSON = 8, 4


def home_settings(home: Path, **overrides: Any) -> Settings:
    """Settings of a home, explicit, so that the caller's SIAMID_* variables stay out."""
    options: dict[str, Any] = {
        "database_url": f"sqlite:///{home / 'siamid.db'}",
        "torch_threads": 1,
        **overrides,
    }
    return Settings(home=home, **options)


def quick_model(rt: Runtime) -> str:
    """The API tests' model: one member, named ``api-test``."""
    return shared_quick_model(rt, members=1, name="api-test")


@dataclass(frozen=True)
class Prepared:
    home: Path
    gallery: Path
    model: str


@dataclass(frozen=True)
class Keys:
    """Request headers carrying a read key and a write key."""

    read: dict[str, str]
    write: dict[str, str]


def state_of(client: TestClient) -> ApiState:
    state: ApiState = client.app.state.siamid  # type: ignore[attr-defined]
    return state


def wait_ready(client: TestClient, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get("/readyz")
        if r.status_code == 200:
            return dict(r.json())
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after {timeout} s: {r.status_code} {r.text}")
        time.sleep(0.05)


def wait_job(
    client: TestClient, job_id: str, headers: dict[str, str], timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = dict(client.get(f"/v1/jobs/{job_id}", headers=headers).json())
        if job["status"] in ("done", "failed"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")
        time.sleep(0.05)
