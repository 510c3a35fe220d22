"""Helpers the test packages share (plain functions; fixtures live in the conftest files).

- :func:`missing`: a prerequisite (a data set beside the repo, Chromium, PostgreSQL) is absent:
  skip locally, fail under ``CI=true`` (``.ci/run`` installs and starts everything).
- :func:`quick_model`: one short epoch of a small encoder on the gallery in the database, for
  tests of plumbing rather than accuracy.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from pipelines.services.crops import CropSpec
    from pipelines.services.runtime import Runtime
    from pipelines.services.training import TrainingSet

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
ATT_FACES = DATASETS / "att_faces"
CELEBA = DATASETS / "celeba_wild"


def missing(what: str) -> NoReturn:
    """Skip the test because ``what`` is absent, or fail it under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {what}")
    pytest.skip(what)


def need_dir(path: Path) -> Path:
    """``path``, or skip (fail under CI=true) when that data set is absent."""
    if not path.is_dir():
        missing(f"data set not found at {path}")
    return path


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    """The browser the Playwright tests drive (Debian's Chromium: Playwright downloads none)."""
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    missing("Chromium is not installed (apt-get install chromium; .ci/run installs it)")


def postgres_admin_url() -> str:
    """The server CI starts (``SIAMID_TEST_POSTGRES_URL``), or skip / fail without it."""
    url = os.environ.get("SIAMID_TEST_POSTGRES_URL")
    if not url:
        missing("SIAMID_TEST_POSTGRES_URL is not set; .ci/run starts PostgreSQL and exports it")
    return url


def quick_model(
    rt: Runtime,
    *,
    seed: int = 0,
    members: int | None = None,
    name: str | None = None,
    training: TrainingSet | None = None,
    faces: str | None = None,
) -> str:
    """Train one short epoch on ``training`` (default: the gallery in ``rt``'s database) and
    register it; returns the model version's name."""
    from pipelines.services.models import model_name
    from pipelines.services.training import (
        TrainOptions,
        register_trained,
        run_training,
        training_set,
    )

    options = TrainOptions(seed=seed, epochs=1, members=members, faces=faces)
    config, encoder = options.configs()
    config = replace(config, identities_per_batch=4, images_per_identity=2, patience=0)
    name = name or model_name([config.arch, "quick"], seed)
    crop: CropSpec = options.crop()
    ckpt = rt.settings.checkpoint_file(name)
    ts = training if training is not None else training_set(rt, None, crop)
    validation = run_training(ts, config, encoder, ckpt, crop)
    return register_trained(rt, name, ckpt, config, encoder, validation, crop).name
