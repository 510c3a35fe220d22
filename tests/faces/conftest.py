"""Fixtures of the faces tests: dlib's 5-point model, a detector, the AT&T faces."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests.faces.synth, faces, bench
    sys.path.insert(0, str(ROOT))

from tests.faces.synth import (  # noqa: E402
    ATT,
    CNN_FACE_DETECTOR,
    SHAPE_PREDICTOR_5,
    find_model_file,
    missing,
    need_dir,
)


def _installed(name: str) -> Path:
    """One of face_recognition_models' files, or skip (fail under CI=true) without it."""
    path = find_model_file(name)
    if path is None:
        missing(f"{name} not installed (pip install face-recognition-models)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def shape_predictor_path() -> Path:
    return _installed(SHAPE_PREDICTOR_5)


@pytest.fixture(scope="session")
def detector(shape_predictor_path: Path):  # noqa: ANN201 - faces.detect.Detector
    from faces.detect import Detector

    return Detector(shape_predictor_path)


@pytest.fixture(scope="session")
def cnn_path() -> Path:
    return _installed(CNN_FACE_DETECTOR)


@pytest.fixture(scope="session")
def cnn_detector(shape_predictor_path: Path, cnn_path: Path):  # noqa: ANN201
    """A detector with the CNN fallback, as the service layer builds it."""
    from faces.detect import Detector

    return Detector(shape_predictor_path, cnn_path=cnn_path)


@pytest.fixture(scope="session")
def att() -> Path:
    return need_dir(ATT)
