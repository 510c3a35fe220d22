"""API keys: stored hashed, shown once, checked in constant time, scoped, revocable."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from pipelines.cli import app as cli
from pipelines.services.apikeys import (
    ApiKeyCache,
    ApiKeyError,
    allows,
    authenticate,
    create_api_key,
    digest,
    list_api_keys,
    revoke_api_key,
)
from pipelines.services.runtime import Runtime
from storage.models import ApiKey
from tests.api.support import Keys


def test_only_the_digest_of_a_key_is_stored(rt: Runtime) -> None:
    new = create_api_key(rt.sessions, "read")
    assert new.token.startswith(new.info.prefix + "_") and len(new.token) > 50
    with rt.sessions() as s:
        row = s.scalars(select(ApiKey)).one()
        stored = [str(getattr(row, c.key)) for c in ApiKey.__table__.columns]
    assert row.hash == digest(new.token)
    assert not any(new.token in value for value in stored)
    assert authenticate(rt.sessions, new.token) == new.info


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # right prefix, wrong secret
        lambda t: t[:15],  # the public prefix alone
        lambda t: "siamid_00000000_" + t[16:],  # unknown prefix
        lambda t: "",
        lambda t: "Bearer " + t,
    ],
)
def test_wrong_tokens_are_unknown(rt: Runtime, mangle) -> None:  # type: ignore[no-untyped-def]
    token = create_api_key(rt.sessions, "write").token
    assert authenticate(rt.sessions, mangle(token)) is None


def test_revoked_keys_stay_listed_and_stop_authenticating(rt: Runtime) -> None:
    a = create_api_key(rt.sessions, "read")
    b = create_api_key(rt.sessions, "write")
    first = revoke_api_key(rt.sessions, a.info.id)
    assert first.revoked_at is not None
    assert revoke_api_key(rt.sessions, a.info.id).revoked_at == first.revoked_at
    listed = {k.id: k for k in list_api_keys(rt.sessions)}
    assert not listed[a.info.id].active and listed[b.info.id].active
    found = authenticate(rt.sessions, a.token)
    assert found is not None and not found.active
    with pytest.raises(ApiKeyError, match="no API key with id 999"):
        revoke_api_key(rt.sessions, 999)
    with pytest.raises(ApiKeyError, match="unknown scope"):
        create_api_key(rt.sessions, "admin")


def test_write_implies_read() -> None:
    assert allows("write", "read") and allows("write", "write") and allows("read", "read")
    assert not allows("read", "write")


def test_cli_create_list_revoke(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIAMID_HOME", str(home))
    monkeypatch.delenv("SIAMID_DATABASE_URL", raising=False)
    runner = CliRunner()
    made = runner.invoke(cli, ["apikey", "create", "--scope", "write", "--json"])
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout.strip().splitlines()[-1])
    assert created["scope"] == "write" and created["key"].startswith(created["prefix"])
    listed = runner.invoke(cli, ["apikey", "list", "--json"])
    assert listed.exit_code == 0 and created["key"] not in listed.output
    (row,) = json.loads(listed.stdout.strip().splitlines()[-1])["keys"]
    assert row["prefix"] == created["prefix"] and row["revoked_at"] is None
    revoked = runner.invoke(cli, ["apikey", "revoke", str(created["id"]), "--json"])
    assert revoked.exit_code == 0 and json.loads(revoked.stdout.splitlines()[-1])["revoked_at"]
    assert runner.invoke(cli, ["apikey", "create"]).exit_code != 0  # --scope is required
    bad = runner.invoke(cli, ["apikey", "create", "--scope", "admin"])
    assert bad.exit_code != 0


def test_http_needs_a_valid_key_of_the_right_scope(
    client: TestClient, rt: Runtime, keys: Keys
) -> None:
    missing = client.get("/v1/identities")
    assert missing.status_code == 401 and "X-API-Key" in missing.json()["detail"]
    unknown = client.get("/v1/identities", headers={"X-API-Key": "siamid_12345678_nope"})
    assert unknown.status_code == 401 and "unknown API key" in unknown.json()["detail"]

    assert client.get("/v1/identities", headers=keys.read).status_code == 200
    assert client.get("/v1/identities", headers=keys.write).status_code == 200  # write reads
    for method, path in [
        ("DELETE", "/v1/identities/person_0001"),
        ("POST", "/v1/identities/x/images"),
    ]:
        denied = client.request(method, path, headers=keys.read, files={"images": ("a.png", b"x")})
        assert denied.status_code == 403, denied.text
        assert "needs a write key" in denied.json()["detail"]
    assert client.get("/v1/identities/person_0001", headers=keys.read).status_code == 200

    key = authenticate(rt.sessions, keys.read["X-API-Key"])
    assert key is not None
    revoke_api_key(rt.sessions, key.id)
    # A checked key is trusted from memory for key_cache_seconds (1 s): refused after that.
    deadline = time.monotonic() + 1.0 + 2.0
    while (revoked := client.get("/v1/identities", headers=keys.read)).status_code == 200:
        assert time.monotonic() < deadline, "a revoked key was still accepted after 3 s"
        time.sleep(0.05)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]


def test_key_cache_expires_and_keeps_only_active_keys(rt: Runtime) -> None:
    new = create_api_key(rt.sessions, "read")
    cache = ApiKeyCache(ttl=0.2, capacity=2)
    assert cache.get(new.token) is None
    cache.put(new.token, new.info)
    assert cache.get(new.token) == new.info
    assert cache.get(new.token + "x") is None
    time.sleep(0.25)
    assert cache.get(new.token) is None
    revoked = revoke_api_key(rt.sessions, new.info.id)
    cache.put(new.token, revoked)
    assert cache.get(new.token) is None
    for i in range(5):  # bounded: old entries go when it is full
        cache.put(f"{new.token}{i}", new.info)
    assert len(cache._keys) <= 2
    off = ApiKeyCache(ttl=0)
    off.put(new.token, new.info)
    assert off.get(new.token) is None


def test_health_and_docs_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert (
        "/v1/identify" in spec["paths"] and "APIKeyHeader" in spec["components"]["securitySchemes"]
    )
