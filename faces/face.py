"""``Face``: one detected face as plain data (box, five landmarks, score), and its size check.

The record is what every later stage exchanges: alignment reads its landmarks, storage keeps
its ``to_dict()`` as JSON, the service layer filters on :func:`is_too_small`. It holds no
reference to dlib or to the image it came from, so it pickles, compares and serialises freely.

Coordinates are in pixels of the ORIGINAL image (never of an upsampled or downscaled working
copy) and follow two conventions, each the natural one for its use:

- ``landmarks``: pixel-centre coordinates, as dlib and OpenCV use them: the centre of the pixel
  in column ``x``, row ``y`` is the point ``(x, y)``.
- ``box``: pixel-edge coordinates, as ``PIL.Image.crop`` uses them: pixel ``(x, y)`` covers
  ``[x, x+1) x [y, y+1)``; so ``right - left`` is the width in pixels, and a dlib rectangle
  ``(l, t, r, b)`` (inclusive right/bottom) is the box ``(l, t, r + 1, b + 1)``.

A box may reach outside the image when the face is cut by the border; it is not clipped,
since how far the face extends is information (alignment fills the outside with black).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faces.errors import LandmarksError

#: Names of the five landmarks, in dlib's ``shape_predictor_5_face_landmarks`` order. "Right"
#: and "left" are as seen in the picture (as in dlib's chip template, where point 0 sits at
#: x = 0.86 of the chip, and in face_recognition's naming): landmark 0 is the outer corner of the
#: eye on the right of the picture, which is the person's own left eye.
LANDMARK_NAMES: tuple[str, ...] = (
    "right_eye_outer",
    "right_eye_inner",
    "left_eye_outer",
    "left_eye_inner",
    "nose_base",
)
RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_OUTER, LEFT_EYE_INNER, NOSE_BASE = range(5)

#: Smallest distance, in original pixels, between the two outer eye corners of a face that is
#: worth aligning and embedding: 16 px, about the smallest face the detector finds at its
#: default 2x enlargement, because
#:
#: - the landmarks stay usable down there: AT&T faces pasted into scenes at a 16 px eye span are
#:   found 18 times in 39 (37 in 39 at 18 px, all at 20 px), their landmarks within 3.6% of the
#:   eye span of where they are at full size (median; 3.1% at 18 px, 2.4% at 25 px, 1.7% at
#:   40 px; ``tests/faces/test_detect.py``);
#: - faces that small still identify: on celeba_wild, embedding the 211 faces with eyes 15-25 px
#:   apart (refused under the earlier 25 px floor) lifted zero-shot rank-1 from 0.872 to 0.918
#:   and DIR at FPIR 1% from 0.703 to 0.732 (BENCHMARKS.md). A 150x150 dlib chip (eyes 74 px
#:   apart) then enlarges the face up to 4.6x, and the small encoders' 56x48 crops (eyes ~24 px
#:   apart) up to 1.5x.
MIN_EYE_SPAN: float = 16.0

_BOX_KEYS = ("left", "top", "right", "bottom")

#: The detectors a face can come from (:class:`faces.detect.Detector`): HOG, or the CNN fallback.
FOUND_BY: tuple[str, ...] = ("hog", "cnn")


@dataclass(frozen=True, eq=False)
class Face:
    """One face: its box, its five landmarks and the detector's score.

    ``landmarks`` is a read-only 5x2 float64 array of ``(x, y)`` rows in
    :data:`LANDMARK_NAMES` order. ``score`` is the detector's margin (higher is surer; dlib's
    HOG detector reports faces from 0 up, or from a negative ``adjust_threshold``).
    ``found_by`` names the detector that found it, one of :data:`FOUND_BY` (``cnn``: the CNN
    fallback, whose scores are on another scale).
    Equality compares values, so faces read back with :meth:`from_dict` equal the originals.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray = field(repr=False)
    score: float = 0.0
    found_by: str = "hog"

    def __post_init__(self) -> None:
        box = tuple(float(v) for v in self.box)
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            raise LandmarksError(
                f"a face box is 4 finite numbers (left, top, right, bottom), got {self.box!r}"
            )
        if box[2] < box[0] or box[3] < box[1]:
            raise LandmarksError(f"a face box needs right >= left and bottom >= top, got {box}")
        points = np.array(self.landmarks, dtype=np.float64)
        if points.shape != (5, 2) or not np.isfinite(points).all():
            raise LandmarksError(
                f"a face has 5 finite (x, y) landmarks in dlib's 5-point order, got an array "
                f"of shape {points.shape}; use a 5-point shape predictor"
            )
        if self.found_by not in FOUND_BY:
            raise LandmarksError(
                f"found_by must be one of {', '.join(FOUND_BY)}, got {self.found_by!r}"
            )
        points.setflags(write=False)
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "landmarks", points)
        object.__setattr__(self, "score", float(self.score))

    # ------------------------------------------------------------------ measures

    @property
    def width(self) -> float:
        """Box width in pixels."""
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        """Box height in pixels."""
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        """Box area in square pixels: the order of :meth:`faces.detect.Detector.detect`."""
        return self.width * self.height

    @property
    def eye_span(self) -> float:
        """Distance in pixels between the two outer eye corners (landmarks 0 and 2).

        The best single measure of how many pixels the face really has: unlike the box it does
        not depend on the detector's framing, and alignment scales by it.
        """
        return float(
            np.linalg.norm(self.landmarks[RIGHT_EYE_OUTER] - self.landmarks[LEFT_EYE_OUTER])
        )

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (plain floats and lists) for storage; see :meth:`from_dict`."""
        return {
            "box": dict(zip(_BOX_KEYS, self.box, strict=True)),
            "landmarks": {
                name: [float(x), float(y)]
                for name, (x, y) in zip(LANDMARK_NAMES, self.landmarks, strict=True)
            },
            "score": self.score,
            "found_by": self.found_by,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Face:
        """The face that :meth:`to_dict` wrote; a :class:`LandmarksError` names what is wrong."""
        try:
            box = tuple(float(data["box"][k]) for k in _BOX_KEYS)
            landmarks = [[float(v) for v in data["landmarks"][n]] for n in LANDMARK_NAMES]
            score = float(data.get("score", 0.0))
            found_by = str(data.get("found_by", "hog"))
        except (KeyError, TypeError, ValueError) as exc:
            raise LandmarksError(
                f"not a serialised face ({type(exc).__name__}: {exc}); expected the keys "
                f"box{{{', '.join(_BOX_KEYS)}}}, landmarks{{{', '.join(LANDMARK_NAMES)}}}, "
                "score, as written by Face.to_dict()"
            ) from exc
        return cls(
            box=box,  # type: ignore[arg-type]
            landmarks=np.asarray(landmarks),
            score=score,
            found_by=found_by,
        )

    # ------------------------------------------------------------------ value semantics

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Face):
            return NotImplemented
        return (
            self.box == other.box
            and self.score == other.score
            and self.found_by == other.found_by
            and bool(np.array_equal(self.landmarks, other.landmarks))
        )

    def __hash__(self) -> int:
        return hash((self.box, self.score, self.found_by, self.landmarks.tobytes()))

    def __repr__(self) -> str:
        box = ", ".join(f"{v:.1f}" for v in self.box)
        by = "" if self.found_by == "hog" else f", found_by={self.found_by}"
        return f"Face(box=({box}), eye_span={self.eye_span:.1f}, score={self.score:.3f}{by})"


def is_too_small(face: Face, min_eye_span: float = MIN_EYE_SPAN) -> bool:
    """Whether ``face`` has too few pixels to align and embed (see :data:`MIN_EYE_SPAN`).

    Such faces are still returned by the detector, so that a caller can count or show them;
    the pipeline should not enrol or identify them.
    """
    return face.eye_span < min_eye_span
