"""The gallery over HTTP: pages, one identity, enrolment with its indexing job, removal."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from pipelines.services.runtime import Runtime
from siamese.synthetic import generate_gallery
from tests.api.support import PEOPLE, Keys, Prepared, state_of, wait_job


@pytest.fixture
def newcomer(tmp_path: Path) -> list[Path]:
    """Three photos of someone who is not enrolled."""
    generate_gallery(tmp_path / "new", identities=1, per_identity=3, seed=5, first_identity=100)
    return sorted((tmp_path / "new").rglob("*.png"))


def url(name: str) -> str:
    return "/v1/identities/" + quote(name, safe="")


def names_in(answer: dict) -> set[str]:  # type: ignore[type-arg]
    return {c["identity"] for c in answer["candidates"]} | {answer["identity"]} - {None}


def test_pages_of_identities(client: TestClient, keys: Keys) -> None:
    first = client.get("/v1/identities", params={"limit": 3}, headers=keys.read).json()
    assert first["total"] == PEOPLE and first["offset"] == 0 and first["limit"] == 3
    assert [i["name"] for i in first["items"]] == ["person_0000", "person_0001", "person_0002"]
    assert all(i["accepted"] == 4 and i["rejected"] == 0 for i in first["items"])
    rest = client.get("/v1/identities", params={"offset": 3, "limit": 100}, headers=keys.read)
    assert [i["name"] for i in rest.json()["items"]] == [f"person_{i:04d}" for i in range(3, 8)]
    empty = client.get("/v1/identities", params={"offset": 50}, headers=keys.read).json()
    assert empty["items"] == [] and empty["total"] == PEOPLE
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "many"}):
        assert client.get("/v1/identities", params=bad, headers=keys.read).status_code == 422


def test_one_identity_without_server_paths(
    client: TestClient, keys: Keys, prepared: Prepared
) -> None:
    r = client.get(url("person_0003"), headers=keys.read)
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "person_0003" and len(body["images"]) == 4
    assert all(len(im["sha256"]) == 64 and im["status"] == "accepted" for im in body["images"])
    assert str(prepared.gallery) not in r.text and "source" not in r.text
    assert body["created_at"].endswith(("Z", "+00:00"))
    missing = client.get(url("nobody"), headers=keys.read)
    assert missing.status_code == 404
    assert missing.json()["detail"].startswith("identity 'nobody' is not in the gallery")


@pytest.mark.parametrize("name", ["a\x00b", "tab\there", "x" * 513])
def test_names_are_checked_before_use(client: TestClient, keys: Keys, name: str) -> None:
    for method in ("GET", "DELETE"):
        r = client.request(method, url(name), headers=keys.write)
        assert r.status_code == 422, (method, r.text)


def test_enrol_then_identify_after_the_job(
    client: TestClient, keys: Keys, rt: Runtime, newcomer: list[Path]
) -> None:
    name = "Zoë 王 O'Brien\"; DROP TABLE identity; --"
    before = state_of(client).live.current().index_version_id
    files = [
        ("images", ("../../../etc/passwd", newcomer[0].read_bytes())),
        ("images", ("b.png", newcomer[1].read_bytes())),
    ]
    r = client.post(url(name) + "/images", headers=keys.write, files=files)
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["identity"], body["new"], body["duplicates"]) == (name, 2, 0)
    assert r.headers["Location"] == f"/v1/jobs/{body['job']['id']}"
    job = wait_job(client, body["job"]["id"], keys.read)
    assert job["status"] == "done", job
    assert job["result"]["published"] and job["result"]["index_version"] > before
    assert job["result"]["embedded"] == 2 and job["result"]["vectors"] == 34
    # The job reads done only once this worker serves the new version.
    assert state_of(client).live.current().index_version_id == job["result"]["index_version"]

    found = client.post(
        "/v1/identify", headers=keys.read, files={"image": ("p.png", newcomer[0].read_bytes())}
    ).json()["faces"][0]
    assert found["identity"] == name and found["index_version"] == job["result"]["index_version"]
    shown = client.get(url(name), headers=keys.read).json()
    assert shown["name"] == name and len(shown["images"]) == 2

    # Bytes live at their content address; the client's file name is nowhere on disk.
    uploads = rt.settings.home_dir / "uploads"
    stored = sorted(p.name for p in uploads.rglob("*") if p.is_file())
    assert stored == sorted(body["sha256"])
    assert not list(rt.settings.home_dir.rglob("passwd"))

    again = client.post(url(name) + "/images", headers=keys.write, files=files[:1])
    assert again.status_code == 200 and again.json()["duplicates"] == 1
    assert again.json()["job"] is None


def test_enrolment_is_all_or_nothing(
    client: TestClient, keys: Keys, rt: Runtime, newcomer: list[Path]
) -> None:
    files = [
        ("images", ("good.png", newcomer[0].read_bytes())),
        ("images", ("bad.png", b"GIF89a but not really")),
    ]
    r = client.post(url("half"), headers=keys.write, files=files)  # wrong route: GET only
    assert r.status_code == 405
    r = client.post(url("half") + "/images", headers=keys.write, files=files)
    assert r.status_code == 422, r.text
    assert "image 2 (bad.png)" in r.json()["detail"]
    assert client.get(url("half"), headers=keys.read).status_code == 404
    assert not (rt.settings.home_dir / "uploads").exists()
    many = [("images", (f"{i}.png", newcomer[0].read_bytes())) for i in range(5)]
    too_many = client.post(url("many") + "/images", headers=keys.write, files=many)
    assert too_many.status_code == 413 and "at most 4 images" in too_many.json()["detail"]


def test_removed_identity_is_never_answered_even_before_the_next_index(
    client: TestClient, keys: Keys, prepared: Prepared
) -> None:
    state = state_of(client)
    probe = (prepared.gallery / "person_0004" / "000.png").read_bytes()

    def ask() -> dict:  # type: ignore[type-arg]
        r = client.post("/v1/identify", headers=keys.read, files={"image": ("p.png", probe)})
        assert r.status_code == 200, r.text
        return dict(r.json()["faces"][0])

    before = ask()
    assert before["identity"] == "person_0004"
    state.jobs.stop()  # hold indexing back: the index still holds the vectors
    removed = client.delete(url("person_0004"), headers=keys.write)
    assert removed.status_code == 200, removed.text
    assert removed.json()["removed_images"] == 4 and removed.json()["job"]["status"] == "queued"
    after = ask()
    assert after["index_version"] == before["index_version"]  # same index, same vectors
    assert "person_0004" not in names_in(after)
    assert client.get(url("person_0004"), headers=keys.read).status_code == 404
    assert client.delete(url("person_0004"), headers=keys.write).status_code == 404

    state.jobs.start()  # the queued job runs now
    job = wait_job(client, removed.json()["job"]["id"], keys.read)
    assert job["status"] == "done" and job["result"]["removed"] == 4
    later = ask()
    assert later["index_version"] == job["result"]["index_version"] > before["index_version"]
    assert "person_0004" not in names_in(later)


def test_removal_deletes_the_stored_photos(
    client: TestClient, keys: Keys, rt: Runtime, newcomer: list[Path]
) -> None:
    files = [("images", (p.name, p.read_bytes())) for p in newcomer]
    body = client.post(url("temp") + "/images", headers=keys.write, files=files).json()
    wait_job(client, body["job"]["id"], keys.read)
    uploads = rt.settings.home_dir / "uploads"
    assert len([p for p in uploads.rglob("*") if p.is_file()]) == 3
    gone = client.delete(url("temp"), headers=keys.write).json()
    assert gone["deleted_files"] == 3
    assert not [p for p in uploads.rglob("*") if p.is_file()]
    wait_job(client, gone["job"]["id"], keys.read)


def test_jobs_unknown_or_malformed(client: TestClient, keys: Keys) -> None:
    assert client.get("/v1/jobs/" + "0" * 32, headers=keys.read).status_code == 404
    assert client.get("/v1/jobs/../../etc", headers=keys.read).status_code == 404
    assert client.get("/v1/jobs/xyz", headers=keys.read).status_code == 422


def test_simultaneous_enrolments_of_a_new_name(
    client: TestClient, keys: Keys, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    generate_gallery(tmp_path / "twins", identities=1, per_identity=4, seed=8, first_identity=400)
    photos = sorted((tmp_path / "twins").rglob("*.png"))

    def enrol(p: Path) -> int:
        files = {"images": (p.name, p.read_bytes())}
        return client.post(url("twin") + "/images", headers=keys.write, files=files).status_code

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(enrol, photos))
    assert codes == [202] * 4
    shown = client.get(url("twin"), headers=keys.read).json()
    assert len(shown["images"]) == 4


def test_an_enrolment_job_waits_for_a_running_embed(
    client: TestClient, keys: Keys, rt: Runtime, newcomer: list[Path]
) -> None:
    """The job and ``siamid embed`` index under the one lock: while an embed run holds it (the
    embed flow takes it through the same function; tests/pipelines/test_runlock.py shows the
    console script refused while it is held), the job waits; then it indexes."""
    from pipelines.services.indexing import index_lock

    before = state_of(client).live.current().index_version_id
    with index_lock(rt):
        r = client.post(
            url("Waits") + "/images",
            headers=keys.write,
            files=[("images", ("a.png", newcomer[0].read_bytes()))],
        )
        job_id = r.json()["job"]["id"]
        time.sleep(1.0)
        job = client.get(f"/v1/jobs/{job_id}", headers=keys.read).json()
        assert job["status"] in ("queued", "running"), job
        assert state_of(client).live.current().index_version_id == before
    job = wait_job(client, job_id, keys.read)
    assert job["status"] == "done" and job["result"]["index_version"] > before, job
