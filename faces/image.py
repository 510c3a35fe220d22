"""Input images: what the package accepts, and the working copies that dlib is shown.

Detection runs on a working copy of the photo, not on the photo itself: upsampled so that small
faces reach the HOG detector's 80 px window, reduced so that a huge photo fits in memory and
time, turned by quarter turns to find faces in sideways photos, padded so that faces cut by
the border still get a detection window. A :class:`WorkingCopy` records each of those steps so
that points found on the copy map back exactly to the original photo.

Points use pixel-centre coordinates (the centre of the pixel in column ``x``, row ``y`` is the
point ``(x, y)``); the resamplers keep ``x_original = (x_copy + 0.5) / scale - 0.5`` exact.
Boxes use pixel-edge coordinates (see :mod:`faces.face`) and are mapped through their corners.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from faces.errors import ImageFormatError

logger = logging.getLogger(__name__)

#: Output rows reduced per step by :func:`reduce_by`: bounds its float temporaries to about
#: ``256 * width * channels * 4`` bytes whatever the image's height.
_REDUCE_BAND_ROWS = 256

Box = tuple[float, float, float, float]


def check_image(image: object) -> np.ndarray:
    """``image`` as a C-contiguous uint8 HxW (grey) or HxWx3 (RGB) array, or a clear error.

    Conversions that lose information (16-bit depth, CMYK, alpha, palettes) are the caller's
    decision, so they are refused with the recipe rather than guessed. HxWx1 is taken as grey.
    """
    if not isinstance(image, np.ndarray):
        raise ImageFormatError(
            f"expected a numpy array (HxW grey or HxWx3 RGB, uint8), got {type(image).__name__}; "
            "decode with Pillow and pass np.asarray(pil_image.convert('RGB'))"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ImageFormatError(
            f"expected HxW (grey) or HxWx3 (RGB), got shape {image.shape}; convert RGBA, CMYK "
            "or palette images with pil_image.convert('RGB') first"
        )
    if image.dtype != np.uint8:
        raise ImageFormatError(
            f"expected 8-bit pixels (uint8), got {image.dtype}; scale 16-bit images down first, "
            "e.g. (img >> 8).astype(np.uint8), or decode with pil_image.convert('RGB')"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageFormatError(f"the image is empty (shape {image.shape}); nothing to detect in")
    return np.ascontiguousarray(image)


def reduce_by(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` shrunk ``factor`` times by averaging ``factor x factor`` blocks (uint8).

    Block averaging is the right low-pass for an integer reduction (no aliasing, no ringing)
    and it runs in row bands, so reducing a 30000 px panorama never holds a float copy of it.
    The last ``H % factor`` rows and ``W % factor`` columns are dropped: the copy's pixel
    ``(x, y)`` is the mean of original pixels ``[x*f, x*f+f) x [y*f, y*f+f)``, whose centre is
    ``((x + 0.5) * f - 0.5, (y + 0.5) * f - 0.5)``.
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if factor == 1:
        return image
    h, w = image.shape[0] // factor, image.shape[1] // factor
    if h == 0 or w == 0:
        raise ImageFormatError(
            f"cannot reduce a {image.shape[1]}x{image.shape[0]} image {factor} times"
        )
    out = np.empty((h, w, *image.shape[2:]), dtype=np.uint8)
    band = max(1, _REDUCE_BAND_ROWS // factor)
    for r0 in range(0, h, band):
        r1 = min(h, r0 + band)
        block = image[r0 * factor : r1 * factor, : w * factor].astype(np.float32)
        block = block.reshape(r1 - r0, factor, w, factor, *image.shape[2:])
        out[r0:r1] = np.rint(block.mean(axis=(1, 3)))
    return out


def resample(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float]]:
    """``image`` resampled to ``size = (width, height)``, and the exact scale per axis.

    Enlarging is bilinear. Shrinking first averages integer blocks (:func:`reduce_by`, bounded
    memory) and then finishes with Pillow's antialiased bilinear filter on the smaller copy.
    Both steps map pixel centres, so ``x_original = (x_copy + 0.5) / sx - 0.5`` holds with the
    returned ``(sx, sy)``.
    """
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        raise ValueError(f"size must be at least 1x1, got {size}")
    h0, w0 = image.shape[:2]
    if (width, height) == (w0, h0):
        return image, (1.0, 1.0)
    factor = max(1, min(w0 // width, h0 // height))
    reduced = reduce_by(image, factor)
    h1, w1 = reduced.shape[:2]
    if (width, height) != (w1, h1):
        pil = Image.fromarray(reduced)
        reduced = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(reduced), (width / (factor * w1), height / (factor * h1))


def _edge_pad(image: np.ndarray, pad: int) -> np.ndarray:
    """``image`` with its border pixels repeated ``pad`` times on every side."""
    if pad <= 0:
        return image
    widths = ((pad, pad), (pad, pad)) + (((0, 0),) if image.ndim == 3 else ())
    return np.pad(image, widths, mode="edge")


@dataclass(frozen=True)
class WorkingCopy:
    """Pixels shown to dlib, and how they relate to the original photo.

    The copy is made in this order: cut ``region`` out of the original (pixel edges, offset
    ``region[:2]``), resample it by ``scale = (sx, sy)`` to ``size = (w, h)``, turn it
    counterclockwise by ``quarter_turns`` x 90 degrees (``np.rot90``), repeat its border
    ``pad`` times. :meth:`points_to_original` undoes those steps in reverse order.
    """

    pixels: np.ndarray
    region: tuple[int, int, int, int]
    scale: tuple[float, float]
    size: tuple[int, int]
    quarter_turns: int = 0
    pad: int = 0

    @classmethod
    def make(
        cls,
        image: np.ndarray,
        *,
        scale: float,
        region: tuple[int, int, int, int] | None = None,
        quarter_turns: int = 0,
        pad: int = 0,
    ) -> WorkingCopy:
        """The copy of ``image`` (or of its ``region``) at ``scale``, turned and padded."""
        h, w = image.shape[:2]
        left, top, right, bottom = region if region is not None else (0, 0, w, h)
        left, top = max(0, int(left)), max(0, int(top))
        right, bottom = min(w, int(right)), min(h, int(bottom))
        if right <= left or bottom <= top:
            raise ValueError(f"region {region} does not overlap the {w}x{h} image")
        view = image[top:bottom, left:right]
        size = (
            max(1, round((right - left) * scale)),
            max(1, round((bottom - top) * scale)),
        )
        pixels, exact = resample(view, size)
        copy = cls(np.ascontiguousarray(pixels), (left, top, right, bottom), exact, size)
        return copy.turned(quarter_turns, pad)

    def turned(self, quarter_turns: int, pad: int = 0) -> WorkingCopy:
        """This (unturned, unpadded) copy turned counterclockwise and padded.

        Lets a detector resample a photo once and search it at several angles.
        """
        if self.quarter_turns or self.pad:
            raise ValueError("only an unturned, unpadded copy can be turned")
        turns = quarter_turns % 4
        if turns == 0 and pad <= 0:
            return self
        pixels = np.rot90(self.pixels, turns) if turns else self.pixels
        pixels = np.ascontiguousarray(_edge_pad(pixels, pad))
        return WorkingCopy(pixels, self.region, self.scale, self.size, turns, max(0, pad))

    @property
    def inner(self) -> Box:
        """The part of :attr:`pixels` that shows the photo (the padding excluded), as a box."""
        w, h = self.size if self.quarter_turns % 2 == 0 else self.size[::-1]
        return (self.pad, self.pad, self.pad + w, self.pad + h)

    def points_to_original(self, points: np.ndarray) -> np.ndarray:
        """Points (pixel centres) of :attr:`pixels`, in the original photo's coordinates."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2) - self.pad
        x, y = p[:, 0], p[:, 1]
        w, h = self.size
        if self.quarter_turns == 1:
            x, y = w - 1 - y, x
        elif self.quarter_turns == 2:
            x, y = w - 1 - x, h - 1 - y
        elif self.quarter_turns == 3:
            x, y = y, h - 1 - x
        sx, sy = self.scale
        return np.stack(
            [(x + 0.5) / sx - 0.5 + self.region[0], (y + 0.5) / sy - 0.5 + self.region[1]], axis=1
        )

    def points_from_original(self, points: np.ndarray) -> np.ndarray:
        """Points of the original photo, in :attr:`pixels`' coordinates (the inverse)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        sx, sy = self.scale
        x = (p[:, 0] - self.region[0] + 0.5) * sx - 0.5
        y = (p[:, 1] - self.region[1] + 0.5) * sy - 0.5
        w, h = self.size
        if self.quarter_turns == 1:
            x, y = y, w - 1 - x
        elif self.quarter_turns == 2:
            x, y = w - 1 - x, h - 1 - y
        elif self.quarter_turns == 3:
            x, y = h - 1 - y, x
        return np.stack([x + self.pad, y + self.pad], axis=1)

    def box_to_original(self, box: Box) -> Box:
        """A box (pixel edges) of :attr:`pixels`, in the original photo's coordinates."""
        return _map_box(box, self.points_to_original)

    def box_from_original(self, box: Box) -> Box:
        """A box of the original photo, in :attr:`pixels`' coordinates."""
        return _map_box(box, self.points_from_original)


def _map_box(box: Box, mapping: Callable[[np.ndarray], np.ndarray]) -> Box:
    """A box mapped through its corners (exact for scales and quarter turns).

    The edge ``x = e`` is the point ``e - 0.5`` in pixel-centre coordinates; the corners are
    mapped as points and turned back into edges.
    """
    left, top, right, bottom = box
    mapped = mapping(np.array([[left, top], [right, bottom]], dtype=np.float64) - 0.5) + 0.5
    lo, hi = mapped.min(axis=0), mapped.max(axis=0)
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def scale_for(
    width: int, height: int, *, upsample_below: int, max_upsample: int, max_pixels: int
) -> float:
    """The scale at which a ``width x height`` photo is searched for faces.

    Reduced (scale < 1) to ``max_pixels`` when larger. Doubled when its longer side is under
    ``upsample_below``, and doubled again (up to ``max_upsample`` in all) only while the
    enlarged copy's longer side stays within ``upsample_below``, so a 372 px photo is searched
    at 744 px, not 1488. Otherwise 1. See :class:`faces.detect.Detector` for why.
    """
    pixels = width * height
    if pixels > max_pixels:
        return math.sqrt(max_pixels / pixels)
    side = max(width, height)
    if side >= upsample_below or max_upsample < 2:
        return 1.0
    factor = 2
    while factor * 2 <= max_upsample and side * factor * 2 <= upsample_below:
        factor *= 2
    return float(factor)
