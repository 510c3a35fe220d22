"""Fixtures for pipeline tests: a throwaway SIAMID_HOME, a tiny synthetic gallery and a quickly
trained (barely trained: tests of plumbing, not accuracy) model registered in SQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.services.gallery import import_items, scan_image_folder
from pipelines.services.runtime import Runtime, open_runtime
from pipelines.settings import Settings
from siamese.synthetic import generate_gallery
from tests.support import quick_model


@pytest.fixture
def rt(siamid_home: Path) -> Runtime:
    return open_runtime(Settings())  # its own encoder cache: tests stay independent


@pytest.fixture
def tiny_gallery(tmp_path: Path) -> Path:
    root = tmp_path / "gallery"
    generate_gallery(root, identities=8, per_identity=4, seed=3)
    return root


@pytest.fixture
def imported(rt: Runtime, tiny_gallery: Path) -> Path:
    summary = import_items(scan_image_folder(tiny_gallery), sessions=rt.sessions)
    assert summary.new == 32
    return tiny_gallery


@pytest.fixture
def model(rt: Runtime, imported: Path) -> str:
    return quick_model(rt)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for the flow tests of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
