"""Where the pretrained data files live: the ``face_recognition_models`` package (CC0).

The one home of these paths. The package's own ``__init__`` imports ``pkg_resources``, which
current setuptools no longer ships, so the folder is found without importing the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pipelines.services.errors import SiamidError

PACKAGE = "face_recognition_models"
SHAPE_PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"
CNN_FACE_DETECTOR = "mmod_human_face_detector.dat"
FACE_RESNET = "dlib_face_recognition_resnet_model_v1.dat"


class ModelFileError(SiamidError):
    """A pretrained data file that is not installed."""


def model_file(name: str) -> Path:
    """The path of one of the package's files; a clear error when it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise ModelFileError(
        f"the data file {name} is not installed; run `pip install face-recognition-models` "
        "(it ships dlib's CC0 face models)"
    )
