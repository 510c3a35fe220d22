"""The served index: swapped when SQL publishes a newer version, kept when the new one is broken,
and a request keeps the version it started with."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from pipelines.api.live import LiveIdentifier, published_now
from pipelines.services.gallery import import_items, scan_image_folder
from pipelines.services.indexing import index_pending
from pipelines.services.runtime import Runtime
from siamese.synthetic import generate_gallery
from storage.indexes import create_index_version, publish_index_version
from tests.api.support import Keys, Prepared, state_of


def wait_for_version(client: TestClient, version: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").json().get("index_version") != version:
        assert time.monotonic() < deadline, f"index version {version} not served in {timeout} s"
        time.sleep(0.05)


def test_a_version_published_elsewhere_is_swapped_in(
    client: TestClient, keys: Keys, rt: Runtime, prepared: Prepared, tmp_path: Path
) -> None:
    state = state_of(client)
    old = state.live.current()
    probe = prepared.gallery / "person_0006" / "001.png"
    vector = old.embed_paths([probe]).vectors

    generate_gallery(tmp_path / "more", identities=2, per_identity=2, seed=9, first_identity=200)
    import_items(scan_image_folder(tmp_path / "more"), sessions=rt.sessions)
    new_version = index_pending(rt, workers=0).index.index_version_id  # as `siamid embed` would
    assert new_version > old.index_version_id
    wait_for_version(client, new_version)

    assert state.live.current() is not old and state.live.swaps == 2
    # A request that took the old identifier before the swap finishes on it, unharmed.
    in_flight = old.decide("p", old.search(vector)[0])
    assert in_flight.index_version == old.index_version_id and in_flight.identity == "person_0006"
    answer = client.post(
        "/v1/search", headers=keys.read, json={"embedding": vector[0].tolist()}
    ).json()
    assert answer["index_version"] == new_version and answer["identity"] == "person_0006"
    assert f"siamid_api_index_version {float(new_version)}" in client.get("/metrics").text


def test_a_broken_version_is_not_served_and_the_old_one_stays(
    client: TestClient, rt: Runtime, tmp_path: Path
) -> None:
    state = state_of(client)
    serving = state.live.current()
    broken = tmp_path / "broken.faiss"
    broken.write_bytes(b"not a faiss index")
    with rt.sessions.begin() as s:
        row = create_index_version(
            session=s, model_version_id=serving.model.id, factory="Flat", path=str(broken)
        )
        publish_index_version(session=s, index_version_id=row.id, sha256="0" * 64, vector_count=1)
    assert state.live.refresh() is False
    assert state.live.current() is serving
    assert state.live.last_error is not None and "broken.faiss" in state.live.last_error
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["index_version"] == serving.index_version_id
    assert state.live.refresh() is False  # the same broken version is not loaded again


def test_calibration_changes_the_threshold_without_a_new_index(
    client: TestClient, rt: Runtime
) -> None:
    from storage.calibration import add_calibration

    state = state_of(client)
    serving = state.live.current()
    with rt.sessions.begin() as s:
        add_calibration(
            session=s,
            model_version_id=serving.model.id,
            index_version_id=serving.index_version_id,
            target_fpir=0.01,
            threshold=0.123,
            realised_fpir=0.01,
            nonmated_searches=100,
            gallery_identities=8,
            gallery_images=32,
            details={},
        )
    now = published_now(rt)
    assert now is not None and now.index_version_id == serving.index_version_id
    assert now.calibration_id is not None
    deadline = time.monotonic() + 10
    while client.get("/readyz").json()["threshold"] != 0.123:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.get("/readyz").json()["threshold_source"] == "calibrated@fpir=0.01"


def test_live_identifier_is_not_ready_until_something_is_published(tmp_path: Path) -> None:
    from pipelines.services.runtime import open_runtime
    from tests.api.support import home_settings

    rt = open_runtime(home_settings(tmp_path / "h"))
    live = LiveIdentifier(rt)
    assert live.refresh() is False and not live.ready
    assert "siamid embed" in (live.last_error or "")
    rt.engine.dispose()
