"""Face detection and 5-point alignment: the ground floor under embedding and identification.

Plain data in, plain data out: numpy images (HxWx3 RGB or HxW grey, uint8), :class:`Face`
records, paths of model files passed in by the caller. Nothing here imports the model, the
index, the database or the orchestrator.

- :mod:`faces.face`: the ``Face`` record and the too-small check.
- :mod:`faces.detect`: ``Detector`` (dlib HOG + 5-point shape predictor).
- :mod:`faces.align`: ``similarity_transform``, ``align`` and ``dlib_chip`` (import them from
  ``faces.align``: the package does not re-export them, since ``faces.align`` must stay the
  module).
- :mod:`faces.image`: accepted inputs and the working copies dlib is shown.

``Detector`` is imported lazily, so that reading and writing ``Face`` records does not load dlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faces.errors import FacesError, ImageFormatError, LandmarksError, ModelFileError
from faces.face import LANDMARK_NAMES, MIN_EYE_SPAN, Face, is_too_small

if TYPE_CHECKING:
    from faces.detect import Detector

__all__ = [
    "LANDMARK_NAMES",
    "MIN_EYE_SPAN",
    "Detector",
    "Face",
    "FacesError",
    "ImageFormatError",
    "LandmarksError",
    "ModelFileError",
    "is_too_small",
]


def __getattr__(name: str) -> Any:
    if name == "Detector":
        from faces.detect import Detector

        return Detector
    raise AttributeError(f"module 'faces' has no attribute {name!r}")
