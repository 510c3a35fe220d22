"""Which face detectors :class:`faces.detect.Detector` runs: the choices and the default.

- ``hog``: dlib's HOG detector alone (fast; upright, roughly frontal faces).
- ``cnn``: dlib's CNN (MMOD) detector alone, in torch (:mod:`faces.mmod`): turned and tilted
  heads too.
- ``hog+cnn``: HOG, and the CNN on the photos in which HOG finds no face.

The default is chosen by measurement (faces found against time on celeba_wild and AT&T,
BENCHMARKS.md "Face detection: which detector"). This module imports nothing heavy, so that
settings and the command line can name the choices without loading dlib or torch.
"""

from __future__ import annotations

DETECTION_METHODS: tuple[str, ...] = ("hog", "cnn", "hog+cnn")
DEFAULT_DETECTION = "hog+cnn"


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`DETECTION_METHODS`, else a ValueError saying which are."""
    if method not in DETECTION_METHODS:
        raise ValueError(
            f"unknown face detector {method!r}; choose one of {', '.join(DETECTION_METHODS)}"
        )
    return method
