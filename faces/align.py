"""Alignment: a face's five landmarks mapped onto a canonical template, as an upright crop.

Why a similarity transform (rotation, uniform scale, shift) and not a full affine one: five
noisy points would let an affine map shear and squash the face to fit them, changing its
proportions, which is identity information; a similarity only undoes the pose in the image
plane. It is fitted by least squares (Umeyama, reflections excluded, since a mirrored face is
another face).

Two crops:

- :func:`align`: any size and padding, grey or RGB, for this project's own models (e.g. the
  56x48 grey crops of the Siamese network); bilinear, anti-aliased when shrinking.
- :func:`dlib_chip`: what ``dlib.get_face_chip(img, shape, size, padding)`` returns (150x150,
  padding 0.25 for dlib's face ResNet), reproduced without dlib so that stored landmarks can be
  turned into chips anywhere; given the same landmarks the chips are identical to dlib's
  (100 of 100 celeba_wild chips, every pixel; pyramid levels and border cases in the tests).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from faces.errors import LandmarksError
from faces.face import Face
from faces.image import check_image
from faces.warp import dlib_extract, warp_affine

logger = logging.getLogger(__name__)

#: dlib's 5-point face template (``get_face_chip_details``), in the unit square of its mean face
#: shape: the landmarks' positions in a face chip before padding, in :data:`LANDMARK_NAMES`
#: order (eye on the right of the picture outer/inner, left outer/inner, nose base).
DLIB_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
DLIB_TEMPLATE.setflags(write=False)

#: The framing of the AT&T (ORL) photos the Siamese network trains on: the mean landmarks of
#: the 398 faces the default :class:`faces.detect.Detector` finds in the 400 92x112 photos, in
#: the unit square of a 92 px square centred on the photo. With it,
#: ``align(img, face, (92, 112), padding=0.0, template=ATT_TEMPLATE)`` frames a face as AT&T
#: does (forehead to chin, eyes at 47% of the height), and ``size=(48, 56)`` gives the 56x48
#: crops of the network's input (outer eye corners ~24 px apart).
ATT_TEMPLATE = np.array(
    [
        [0.743316, 0.472198],
        [0.600598, 0.471925],
        [0.237526, 0.464769],
        [0.379575, 0.468968],
        [0.486461, 0.719528],
    ]
)
ATT_TEMPLATE.setflags(write=False)


def similarity_transform(src_points: np.ndarray, dst_points: np.ndarray) -> np.ndarray:
    """The 2x3 matrix ``M`` of the similarity that best maps ``src_points`` onto ``dst_points``.

    Least squares over all points (Umeyama 1991) with the rotation kept proper (no mirror):
    ``dst ~= M @ [x, y, 1]``. Points are Nx2, N >= 2, and ``src_points`` must not all coincide.
    """
    src = np.asarray(src_points, dtype=np.float64)
    dst = np.asarray(dst_points, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise LandmarksError(
            f"expected two Nx2 point arrays of the same shape with N >= 2, got {src.shape} and "
            f"{dst.shape}"
        )
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise LandmarksError("the points must be finite numbers")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var <= 1e-12 * max(1.0, float(np.abs(src).max()) ** 2):
        raise LandmarksError(
            "the source points all coincide; a similarity needs two distinct points"
        )
    cov = dst_c.T @ src_c / len(src)
    u, d, vt = np.linalg.svd(cov)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        signs[1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    scale = float((d * signs).sum() / src_var)
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix (as a 2x3 matrix)."""
    m = np.asarray(matrix, dtype=np.float64)
    linear = np.linalg.inv(m[:, :2])
    return np.concatenate([linear, (-linear @ m[:, 2])[:, None]], axis=1)


def template_points(
    size: tuple[int, int], padding: float = 0.25, template: np.ndarray | None = None
) -> np.ndarray:
    """Where :func:`align` puts the five landmarks in a ``size = (w, h)`` crop (pixel centres).

    The template's unit square is grown by ``padding`` on every side (0.25: a quarter of the
    face's width of context around it, dlib's choice for its ResNet) and fitted, centred, into
    the crop; a non-square crop gets the extra room above/below or left/right of the face.
    """
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        raise ValueError(f"size must be at least 1x1 px, got {size}")
    if not math.isfinite(padding) or padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    unit = DLIB_TEMPLATE if template is None else np.asarray(template, dtype=np.float64)
    if unit.shape != (5, 2):
        raise LandmarksError(f"a template is 5x2 unit-square points, got shape {unit.shape}")
    side = min(width, height)
    edge = (unit + padding) / (1 + 2 * padding) * side
    edge += np.array([(width - side) / 2, (height - side) / 2])
    return edge - 0.5


def align(
    image: np.ndarray,
    face: Face,
    size: tuple[int, int] = (150, 150),
    padding: float = 0.25,
    *,
    template: np.ndarray | None = None,
) -> np.ndarray:
    """The face as an upright ``size = (w, h)`` crop: its landmarks on :func:`template_points`.

    Same kind as ``image`` (HxW grey or HxWx3 RGB, uint8). What lies outside the photo is
    black. ``template`` (5x2, unit square) replaces dlib's mean-face template when a model was
    trained on another framing (:data:`ATT_TEMPLATE` with ``padding=0`` for AT&T's).
    """
    img = check_image(image)
    dst = template_points(size, padding, template)
    image_to_crop = similarity_transform(face.landmarks, dst)
    if abs(np.linalg.det(image_to_crop[:, :2])) < 1e-12:
        raise LandmarksError(f"the landmarks of {face!r} are degenerate; cannot align")
    return warp_affine(img, invert_affine(image_to_crop), size)


def dlib_chip(image: np.ndarray, face: Face, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """``dlib.get_face_chip(image, shape, size, padding)``, reproduced without dlib.

    dlib fits the similarity from its template (scaled into the chip) to the landmarks, keeps
    its angle, and extracts the square of side ``size * scale`` centred on the chip's centre
    through a ``pyramid_down<2>`` image pyramid when the chip is much smaller than the face;
    :func:`faces.warp.dlib_extract` repeats those steps. The landmarks are taken as given
    (dlib's own are whole pixels; pass them unrounded for better chips).
    """
    img = check_image(image)
    if size < 1:
        raise ValueError(f"size must be >= 1 px, got {size}")
    if not math.isfinite(padding) or padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    chip_points = (padding + DLIB_TEMPLATE) / (2 * padding + 1) * size
    chip_to_image = similarity_transform(chip_points, face.landmarks)
    column = chip_to_image[:, 0]  # the image of the unit vector (1, 0)
    angle = math.atan2(column[1], column[0])
    scale = math.hypot(column[0], column[1])
    cx, cy = chip_to_image @ np.array([size / 2, size / 2, 1.0])
    half = (size * scale - 1) / 2
    rect = np.array([cx - half, cy - half, cx + half, cy + half])
    return dlib_extract(img, rect, angle, (size, size))
