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
#: worth aligning and embedding: 25 px, not the 40 px first suggested, because
#:
#: - 25 px is the native eye span of the Siamese network's 56x48 grey crops in AT&T framing
#:   (AT&T's 92x112 photos: 46.5 px on average, so ~24 px at 48 px wide): such a face fills the
#:   crop without being enlarged. In a 150x150 dlib chip (padding 0.25) the corners are 74 px
#:   apart, so dlib's ResNet sees it enlarged 3x at most.
#: - On celeba_wild (``bench/bench_detect.py``, 5,222 faces) the eye span's median is 58 px and
#:   its 5th percentile 25.5 px: 25 px sets aside 237 faces (4.5%), 40 px would set aside 1,137
#:   (21.8%), 30 px 465 (8.9%).
#: - The landmarks stay good that small: AT&T faces pasted at a 25 px eye span are all found,
#:   their landmarks within 2.1% of the eye span of where they are at full size (median; 1.3%
#:   at 40 px, 2.7% at 20 px).
MIN_EYE_SPAN: float = 25.0

_BOX_KEYS = ("left", "top", "right", "bottom")


@dataclass(frozen=True, eq=False)
class Face:
    """One face: its box, its five landmarks and the detector's score.

    ``landmarks`` is a read-only 5x2 float64 array of ``(x, y)`` rows in
    :data:`LANDMARK_NAMES` order. ``score`` is the detector's margin (higher is surer; dlib's
    HOG detector reports faces from 0 up, or from a negative ``adjust_threshold``).
    Equality compares values, so faces read back with :meth:`from_dict` equal the originals.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray = field(repr=False)
    score: float = 0.0

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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Face:
        """The face that :meth:`to_dict` wrote; a :class:`LandmarksError` names what is wrong."""
        try:
            box = tuple(float(data["box"][k]) for k in _BOX_KEYS)
            landmarks = [[float(v) for v in data["landmarks"][n]] for n in LANDMARK_NAMES]
            score = float(data.get("score", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise LandmarksError(
                f"not a serialised face ({type(exc).__name__}: {exc}); expected the keys "
                f"box{{{', '.join(_BOX_KEYS)}}}, landmarks{{{', '.join(LANDMARK_NAMES)}}}, "
                "score, as written by Face.to_dict()"
            ) from exc
        return cls(box=box, landmarks=np.asarray(landmarks), score=score)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ value semantics

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Face):
            return NotImplemented
        return (
            self.box == other.box
            and self.score == other.score
            and bool(np.array_equal(self.landmarks, other.landmarks))
        )

    def __hash__(self) -> int:
        return hash((self.box, self.score, self.landmarks.tobytes()))

    def __repr__(self) -> str:
        box = ", ".join(f"{v:.1f}" for v in self.box)
        return f"Face(box=({box}), eye_span={self.eye_span:.1f}, score={self.score:.3f})"


def is_too_small(face: Face, min_eye_span: float = MIN_EYE_SPAN) -> bool:
    """Whether ``face`` has too few pixels to align and embed (see :data:`MIN_EYE_SPAN`).

    Such faces are still returned by the detector, so that a caller can count or show them;
    the pipeline should not enrol or identify them.
    """
    return face.eye_span < min_eye_span
