"""The Face record: measures, value semantics, JSON round trip, the too-small rule."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest

from faces import MIN_EYE_SPAN, Face, LandmarksError, is_too_small
from faces.face import LANDMARK_NAMES

LANDMARKS = np.array([[70.0, 50.0], [56.0, 51.0], [22.0, 50.0], [36.0, 51.0], [46.0, 78.0]])


def make(**kw: object) -> Face:
    args: dict[str, object] = {"box": (10, 20, 90, 110), "landmarks": LANDMARKS, "score": 1.5}
    args.update(kw)
    return Face(**args)  # type: ignore[arg-type]


def test_measures() -> None:
    face = make()
    assert face.width == 80 and face.height == 90 and face.area == 7200
    assert face.eye_span == pytest.approx(48.0)  # (70, 50) to (22, 50)
    assert face.landmarks.dtype == np.float64 and face.landmarks.shape == (5, 2)
    assert all(isinstance(v, float) for v in face.box)


def test_immutable_and_detached_from_the_callers_array() -> None:
    points = LANDMARKS.copy()
    face = make(landmarks=points)
    points[0, 0] = -1.0
    assert face.landmarks[0, 0] == 70.0
    with pytest.raises(ValueError):
        face.landmarks[0, 0] = 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        face.score = 2.0  # type: ignore[misc]


def test_value_equality_hash_and_pickle() -> None:
    a, b = make(), make(landmarks=LANDMARKS.tolist())
    assert a == b and hash(a) == hash(b)
    assert a != make(score=1.0) and a != make(landmarks=LANDMARKS + 0.5)
    assert pickle.loads(pickle.dumps(a)) == a
    assert len({a, b}) == 1


def test_json_round_trip_is_exact() -> None:
    face = make(box=(1.125, 2.5, 100.75, 130.0), landmarks=LANDMARKS / 3, score=-0.25)
    data = json.loads(json.dumps(face.to_dict()))
    assert list(data["landmarks"]) == list(LANDMARK_NAMES)
    assert Face.from_dict(data) == face
    by_cnn = make(found_by="cnn")
    assert by_cnn != make() and Face.from_dict(json.loads(json.dumps(by_cnn.to_dict()))) == by_cnn
    del data["found_by"]  # records written before the CNN fallback
    assert Face.from_dict(data).found_by == "hog"
    with pytest.raises(LandmarksError, match="found_by must be one of hog, cnn"):
        make(found_by="mtcnn")


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"box": {"left": 0, "top": 0, "right": 1}, "landmarks": {}, "score": 0},
        {"box": [0, 0, 1, 1], "landmarks": {}, "score": 0},
        {"box": {"left": 0, "top": 0, "right": 1, "bottom": 1}, "landmarks": {"nose_base": [1]}},
    ],
)
def test_from_dict_names_the_expected_format(data: dict) -> None:
    with pytest.raises(LandmarksError, match="Face.to_dict"):
        Face.from_dict(data)


@pytest.mark.parametrize(
    "kw",
    [
        {"landmarks": np.zeros((68, 2))},
        {"landmarks": np.zeros(10)},
        {"landmarks": np.full((5, 2), np.nan)},
        {"box": (0, 0, 1)},
        {"box": (10, 0, 5, 5)},
        {"box": (0, 0, np.inf, 5)},
    ],
)
def test_invalid_faces_are_refused(kw: dict) -> None:
    with pytest.raises(LandmarksError):
        make(**kw)


def test_too_small_uses_the_outer_eye_corners() -> None:
    span = MIN_EYE_SPAN
    small = make(landmarks=LANDMARKS * (span - 0.5) / 48.0)
    large = make(landmarks=LANDMARKS * (span + 0.5) / 48.0)
    assert is_too_small(small) and not is_too_small(large)
    assert not is_too_small(small, min_eye_span=10.0)
    assert 15.0 <= MIN_EYE_SPAN <= 40.0
