"""Fixtures of the faces tests: dlib's 5-point model, a detector, the AT&T faces."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests.faces.synth, faces, bench
    sys.path.insert(0, str(ROOT))

from tests.faces.synth import ATT, find_shape_predictor, missing, need_dir  # noqa: E402

SHAPE_PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"


@pytest.fixture(scope="session")
def shape_predictor_path() -> Path:
    path = find_shape_predictor()
    if path is None:
        missing(f"{SHAPE_PREDICTOR_5} not installed (pip install face-recognition-models)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def detector(shape_predictor_path: Path):  # noqa: ANN201 - faces.detect.Detector
    from faces.detect import Detector

    return Detector(shape_predictor_path)


@pytest.fixture(scope="session")
def att() -> Path:
    return need_dir(ATT)
