"""Sampling an image through an affine map: the pixel work behind :mod:`faces.align`.

Two samplers, because they serve two purposes:

- :func:`warp_affine` is the general one: bilinear, with a block-average pre-reduction when the
  output is much smaller than the region it shows (bilinear alone would alias, turning into
  nearest-neighbour at high reductions), and edge-clamped sampling half a pixel beyond the
  border so that a face touching the border does not get a black seam.
- :func:`dlib_extract` reproduces dlib's ``extract_image_chip`` step by step (``pyramid_down<2>``
  levels with their integer arithmetic, the level choice, dlib's bilinear rule that leaves a
  pixel black unless its 2x2 neighbourhood is inside the image, truncation to uint8), so that
  chips made here feed dlib's face ResNet the same pixels ``dlib.get_face_chip`` would.
"""

from __future__ import annotations

import math

import numpy as np

from faces.image import reduce_by

# dlib's pyramid_down<2> maps a point p of an image to p/2 - (1.25, 0.75) in the level below.
_PYR_SHIFT = np.array([1.25, 0.75])
_PYR_KERNEL = (1, 4, 6, 4, 1)


# ------------------------------------------------------------------ general warp


def warp_affine(
    image: np.ndarray, out_to_image: np.ndarray, size: tuple[int, int], *, fill: int = 0
) -> np.ndarray:
    """The ``size = (w, h)`` image whose pixel ``(x, y)`` shows ``image`` at
    ``out_to_image @ (x, y, 1)`` (pixel-centre coordinates), bilinearly interpolated.

    Points more than half a pixel outside ``image`` get ``fill``. When one output pixel spans
    two or more input pixels, the region it shows is first block-averaged by that integer
    factor, so the result is a proper downscale rather than a sparse sampling.
    """
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        raise ValueError(f"size must be at least 1x1, got {size}")
    m = np.asarray(out_to_image, dtype=np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"out_to_image must be a 2x3 affine matrix, got shape {m.shape}")
    step = math.sqrt(abs(np.linalg.det(m[:, :2])))  # input pixels per output pixel
    factor = int(step) if step >= 2 else 1
    if factor > 1:
        # Block-average only the region the output shows (plus a margin), never the whole photo.
        corners = (
            np.array(
                [[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]],
                dtype=np.float64,
            )
            @ m.T
        )
        h, w = image.shape[:2]
        x0 = max(0, int(math.floor(corners[:, 0].min())) - 2 * factor)
        y0 = max(0, int(math.floor(corners[:, 1].min())) - 2 * factor)
        x1 = min(w, int(math.ceil(corners[:, 0].max())) + 2 * factor + 1)
        y1 = min(h, int(math.ceil(corners[:, 1].max())) + 2 * factor + 1)
        if x1 - x0 >= factor and y1 - y0 >= factor:
            image = reduce_by(image[y0:y1, x0:x1], factor)
            # x_image = (x_reduced + 0.5) * factor - 0.5 + x0, so x_reduced = (x_image - x0 + 0.5)
            # / factor - 0.5.
            to_reduced = np.array(
                [
                    [1 / factor, 0, (0.5 - x0) / factor - 0.5],
                    [0, 1 / factor, (0.5 - y0) / factor - 0.5],
                ]
            )
            m = to_reduced[:, :2] @ m
            m[:, 2] += to_reduced[:, 2]
        else:
            return np.full((height, width, *image.shape[2:]), fill, dtype=np.uint8)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    h, w = image.shape[:2]
    inside = (sx >= -0.5) & (sx <= w - 0.5) & (sy >= -0.5) & (sy <= h - 0.5)
    sx = np.clip(sx, 0, w - 1)
    sy = np.clip(sy, 0, h - 1)
    values = _bilinear(image, sx, sy)
    out = np.rint(values).clip(0, 255).astype(np.uint8)
    out[~inside] = fill
    return out


def _bilinear(image: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Bilinear values of ``image`` at in-range float positions (any trailing channels)."""
    h, w = image.shape[:2]
    x0 = np.minimum(np.floor(sx).astype(np.intp), max(w - 2, 0))
    y0 = np.minimum(np.floor(sy).astype(np.intp), max(h - 2, 0))
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx, fy = sx - x0, sy - y0
    if image.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


# ------------------------------------------------------------------ dlib's extract_image_chip


def _rect_down(rect: np.ndarray) -> np.ndarray:
    """dlib's ``pyramid_down<2>::rect_down`` of a drectangle ``[l, t, r, b]``."""
    return np.concatenate([rect[:2] / 2 - _PYR_SHIFT, rect[2:] / 2 - _PYR_SHIFT])


def _area(rect: np.ndarray) -> float:
    """dlib's drectangle area: (r - l + 1) * (b - t + 1), 0 when empty."""
    if rect[0] > rect[2] or rect[1] > rect[3]:
        return 0.0
    return float((rect[2] - rect[0] + 1) * (rect[3] - rect[1] + 1))


def _rotate(center: np.ndarray, points: np.ndarray, angle: float) -> np.ndarray:
    """dlib's ``rotate_point``: ``points`` turned by ``angle`` radians about ``center``."""
    c, s = math.cos(angle), math.sin(angle)
    d = points - center
    return np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]], axis=1) + center


def _round_half_up(v: float) -> int:
    """dlib's drectangle -> rectangle conversion: ``floor(v + 0.5)``."""
    return int(math.floor(v + 0.5))


def pyramid_down2(image: np.ndarray) -> np.ndarray:
    """One level of dlib's ``pyramid_down<2>``: a 5x5 [1 4 6 4 1]^2 / 256 filter, every other
    pixel kept, integer arithmetic truncated as dlib does. Output ``((h-3)//2, (w-3)//2)``; an
    empty image when either side is 8 px or less (dlib's rule)."""
    h, w = image.shape[:2]
    oh, ow = (h - 3) // 2, (w - 3) // 2
    if h <= 8 or w <= 8:
        return np.zeros((0, 0, *image.shape[2:]), dtype=np.uint8)
    src = image.astype(np.int32)
    rows = np.zeros((h, ow, *image.shape[2:]), dtype=np.int32)
    for j, k in enumerate(_PYR_KERNEL):  # horizontal pass, every other column
        rows += k * src[:, j : j + 2 * ow : 2]
    out = np.zeros((oh, ow, *image.shape[2:]), dtype=np.int32)
    for i, k in enumerate(_PYR_KERNEL):  # vertical pass, every other row
        out += k * rows[i : i + 2 * oh : 2]
    return (out // 256).astype(np.uint8)


def dlib_extract(
    image: np.ndarray, rect: np.ndarray, angle: float, size: tuple[int, int]
) -> np.ndarray:
    """dlib's ``extract_image_chip(img, chip_details(rect, chip_dims(rows, cols), angle))``.

    ``rect`` is dlib's drectangle ``[l, t, r, b]`` (inclusive, so its width is ``r - l + 1``),
    ``angle`` in radians, ``size = (cols, rows)``.
    """
    cols, rows = int(size[0]), int(size[1])
    rect = np.asarray(rect, dtype=np.float64)
    chip_area = rows * cols
    img_h, img_w = image.shape[:2]
    width, height = rect[2] - rect[0] + 1, rect[3] - rect[1] + 1
    out_shape = (rows, cols, *image.shape[2:])
    if angle == 0 and rows == height and cols == width:
        # dlib's plain copy of the (rounded) rectangle, black outside the image.
        left, top = _round_half_up(rect[0]), _round_half_up(rect[1])
        out = np.zeros(out_shape, dtype=np.uint8)
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + rows, img_h), min(left + cols, img_w)
        if y1 > y0 and x1 > x0:
            out[y0 - top : y1 - top, x0 - left : x1 - left] = image[y0:y1, x0:x1]
        return out

    # How many pyramid levels, and the crop of the image they are built from.
    depth, grow = 0, 2.0
    down = _rect_down(rect)
    while _area(down) > chip_area:
        down = _rect_down(down)
        depth += 1
        grow = grow * 2 + 2
    center = (rect[:2] + rect[2:]) / 2
    corners = np.array(
        [[rect[0], rect[1]], [rect[2], rect[1]], [rect[0], rect[3]], [rect[2], rect[3]]]
    )
    turned = _rotate(center, corners, angle)
    lo, hi = turned.min(axis=0) - grow, turned.max(axis=0) + grow
    lo = np.maximum(lo, 0.0)
    hi = np.minimum(hi, [img_w - 1.0, img_h - 1.0])
    if lo[0] > hi[0] or lo[1] > hi[1]:
        return np.zeros(out_shape, dtype=np.uint8)
    bl, bt = _round_half_up(lo[0]), _round_half_up(lo[1])
    br, bb = _round_half_up(hi[0]), _round_half_up(hi[1])
    source = image[bt : bb + 1, bl : br + 1]

    # The level the chip is read from.
    local = rect - np.array([bl, bt, bl, bt], dtype=np.float64)
    level = -1
    while _area(_rect_down(local)) > chip_area:
        level += 1
        local = _rect_down(local)
    for _ in range(level + 1):
        source = pyramid_down2(source)

    # Chip corners (0,0), (cols-1,0), (0,rows-1) -> the turned corners of the rectangle.
    c = (local[:2] + local[2:]) / 2
    tl, tr, bl_ = _rotate(
        c, np.array([[local[0], local[1]], [local[2], local[1]], [local[0], local[3]]]), angle
    )
    ex = (tr - tl) / max(cols - 1, 1)
    ey = (bl_ - tl) / max(rows - 1, 1)
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float64)
    px = tl[0] + ex[0] * xs + ey[0] * ys
    py = tl[1] + ex[1] * xs + ey[1] * ys
    return _dlib_bilinear(source, px, py)


def _dlib_bilinear(image: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """dlib's ``interpolate_bilinear`` + black background, truncating to uint8."""
    h, w = image.shape[:2]
    out = np.zeros((*px.shape, *image.shape[2:]), dtype=np.uint8)
    left = np.floor(px).astype(np.intp)
    top = np.floor(py).astype(np.intp)
    ok = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    if not ok.any():
        return out
    left, top = left[ok], top[ok]
    fx, fy = px[ok] - left, py[ok] - top
    if image.ndim == 3:
        fx, fy = fx[:, None], fy[:, None]
    img = image.astype(np.float64)
    value = (1 - fy) * ((1 - fx) * img[top, left] + fx * img[top, left + 1]) + fy * (
        (1 - fx) * img[top + 1, left] + fx * img[top + 1, left + 1]
    )
    out[ok] = np.clip(value, 0, 255).astype(np.uint8)
    return out
