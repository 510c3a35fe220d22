"""Fixtures of the API tests: one prepared SIAMID_HOME (a synthetic gallery of 8 people x 4
photos, a quickly trained one-member model, a published index), copied for every test that
uses it, and the application over the copy driven through ASGI (``TestClient``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipelines.api.app import create_app
from pipelines.api.settings import ApiSettings
from pipelines.services.apikeys import create_api_key
from pipelines.services.gallery import import_items, scan_image_folder
from pipelines.services.indexing import index_pending
from pipelines.services.runtime import Runtime, open_runtime
from siamese.synthetic import generate_gallery
from tests.api.support import (
    PEOPLE,
    PER_PERSON,
    Keys,
    Prepared,
    home_settings,
    quick_model,
    wait_ready,
)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    root = tmp_path_factory.mktemp("api-prepared")
    gallery = root / "gallery"
    generate_gallery(gallery, identities=PEOPLE, per_identity=PER_PERSON, seed=3)
    rt = open_runtime(home_settings(root / "home"))
    assert import_items(scan_image_folder(gallery), sessions=rt.sessions).new == PEOPLE * PER_PERSON
    model = quick_model(rt)
    assert index_pending(rt, model, workers=0).index.published
    rt.engine.dispose()  # the last connection closes: the WAL is folded into the file
    return Prepared(root / "home", gallery, model)


@pytest.fixture
def home(prepared: Prepared, tmp_path: Path) -> Path:
    """A private copy of the prepared home: tests may enrol, remove and publish in it."""
    dest = tmp_path / "home"
    shutil.copytree(prepared.home, dest)
    return dest


@pytest.fixture
def rt(home: Path) -> Iterator[Runtime]:
    runtime = open_runtime(home_settings(home))
    yield runtime
    runtime.engine.dispose()


@pytest.fixture
def api_settings() -> ApiSettings:
    return ApiSettings(poll_seconds=0.1, access_log=False, max_upload_bytes=200_000, max_files=4)


@pytest.fixture
def client(rt: Runtime, api_settings: ApiSettings) -> Iterator[TestClient]:
    """The application over the copied home, started (lifespan) and serving an index."""
    with TestClient(create_app(api_settings=api_settings, runtime=rt)) as c:
        wait_ready(c)
        yield c


@pytest.fixture
def keys(rt: Runtime) -> Keys:
    return Keys(
        {"X-API-Key": create_api_key(rt.sessions, "read").token},
        {"X-API-Key": create_api_key(rt.sessions, "write").token},
    )
