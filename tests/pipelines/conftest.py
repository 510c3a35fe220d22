"""Fixtures for pipeline tests: a throwaway SIAMID_HOME, a tiny synthetic gallery and a quickly
trained (barely trained: tests of plumbing, not accuracy) model registered in SQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.services.gallery import import_items, scan_image_folder
from pipelines.services.runtime import Runtime, open_runtime
from pipelines.settings import Settings
from siamese.synthetic import generate_gallery


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


def quick_model(rt: Runtime, seed: int = 0) -> str:
    """Train one short epoch on the imported gallery and register it; returns its name."""
    from pipelines.services.training import (
        TrainOptions,
        model_name,
        register_trained,
        run_training,
        training_set,
    )

    config, encoder = TrainOptions(seed=seed, epochs=1).configs()
    config = replace(config, identities_per_batch=4, images_per_identity=2, patience=0)
    name = model_name(config, __import__("datetime").datetime.now())
    ckpt = rt.settings.checkpoints_dir / f"{name}.pt"
    validation = run_training(training_set(rt, None), config, encoder, ckpt)
    return register_trained(rt, name, ckpt, config, encoder, validation).name


@pytest.fixture
def model(rt: Runtime, imported: Path) -> str:
    return quick_model(rt)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for the flow tests of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
