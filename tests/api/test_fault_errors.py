"""Known faults answer 503 / 507 with a reason, through the application (ASGI), each caused for
real: SQLite's write lock held by another connection, a full filesystem. A bug stays a 500 and
its traceback is logged once."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipelines.api import probes
from pipelines.api.app import create_app
from pipelines.api.settings import ApiSettings
from pipelines.services.apikeys import create_api_key
from pipelines.services.runtime import open_runtime
from tests.api.support import Keys, Prepared, home_settings, wait_ready
from tests.fault_support import fill, small_filesystem

pytestmark = pytest.mark.fault


def test_database_locked_is_503_with_retry_after(home: Path, api_settings: ApiSettings) -> None:
    rt = open_runtime(home_settings(home, sqlite_busy_seconds=0.3))
    write = {"X-API-Key": create_api_key(rt.sessions, "write").token}
    read = {"X-API-Key": create_api_key(rt.sessions, "read").token}
    try:
        with TestClient(create_app(api_settings=api_settings, runtime=rt)) as c:
            wait_ready(c)
            c.get("/v1/identities", headers=write)  # the key is checked and cached first
            holder = sqlite3.connect(home / "siamid.db", isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # another process's long write transaction
            try:
                locked = c.delete("/v1/identities/person_0001", headers=write)
                listed = c.get("/v1/identities", headers=read)  # readers are not blocked
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            after = c.delete("/v1/identities/person_0001", headers=write)
    finally:
        rt.engine.dispose()
    assert locked.status_code == 503, locked.text
    assert locked.headers["Retry-After"].isdigit()
    assert "database is locked" in locked.json()["detail"]
    assert listed.status_code == 200, listed.text
    assert after.status_code == 200, after.text


def test_disk_full_is_507(prepared: Prepared, tmp_path: Path, api_settings: ApiSettings) -> None:
    with small_filesystem(tmp_path / "small", "32m") as mount:
        home = mount / "home"
        shutil.copytree(prepared.home, home)
        rt = open_runtime(home_settings(home))
        write = {"X-API-Key": create_api_key(rt.sessions, "write").token}
        photo = (prepared.gallery / "person_0002" / "000.png").read_bytes()
        try:
            with TestClient(create_app(api_settings=api_settings, runtime=rt)) as c:
                wait_ready(c)
                c.get("/v1/identities", headers=write)
                filler = fill(mount)
                full = c.post(
                    "/v1/identities/newcomer/images",
                    headers=write,
                    files={"images": ("n.png", photo[:-8] + b"newbytes")},
                )
                filler.unlink()
                page = c.get("/v1/identities/newcomer", headers=write)
        finally:
            rt.engine.dispose()
    assert full.status_code == 507, full.text
    assert "no space left on device" in full.json()["detail"]
    assert page.status_code == 404, page.text  # nothing half-enrolled


def test_a_bug_is_500_and_logged_once(
    client: TestClient,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(probes, "embedding_vector", broken)
    dim = client.get("/readyz").json()["embedding_dim"]
    with caplog.at_level(logging.ERROR):
        r = client.post("/v1/search", headers=keys.read, json={"embedding": [0.1] * dim})
    assert r.status_code == 500 and "internal error" in r.json()["detail"]
    logged = [
        rec for rec in caplog.records if rec.exc_info and rec.exc_info[0] is ZeroDivisionError
    ]
    assert len(logged) == 1 and "POST /v1/search" in logged[0].getMessage()
