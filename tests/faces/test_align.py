"""Similarity fitting, canonical crops and the dlib chip reproduction, on hand-made data."""

from __future__ import annotations

import math

import dlib
import numpy as np
import pytest
from PIL import Image

from faces import Face, LandmarksError
from faces.align import (
    DLIB_TEMPLATE,
    align,
    dlib_chip,
    invert_affine,
    similarity_transform,
    template_points,
)
from faces.warp import pyramid_down2, warp_affine


def similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ m[:, :2].T + m[:, 2]


def face_at(points: np.ndarray) -> Face:
    lo, hi = points.min(axis=0), points.max(axis=0)
    return Face(box=(*lo, *(hi + 1)), landmarks=points, score=1.0)  # type: ignore[arg-type]


def smooth_texture(h: int, w: int, seed: int = 0, rgb: bool = True) -> np.ndarray:
    """Random but smooth content (so interpolation matters), uint8."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3 if rgb else 1), dtype=np.uint8)
    pil = Image.fromarray(small if rgb else small[:, :, 0]).resize((w, h), Image.Resampling.BICUBIC)
    noise = rng.integers(-20, 21, (h, w, 3) if rgb else (h, w))
    return np.clip(np.asarray(pil).astype(int) + noise, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ similarity_transform


@pytest.mark.parametrize(
    ("angle", "scale", "shift"),
    [(0, 1, (0, 0)), (17, 2.5, (103.2, -7.5)), (-95, 0.31, (4, 900)), (180, 7, (-3, 3))],
)
def test_exact_similarity_is_recovered(angle: float, scale: float, shift: tuple) -> None:
    src = DLIB_TEMPLATE * 150
    truth = similarity(angle, scale, shift)
    got = similarity_transform(src, apply(truth, src))
    np.testing.assert_allclose(got, truth, atol=1e-6)


def test_two_points_fix_the_similarity() -> None:
    # (0,0)->(10,10) and (1,0)->(10,12): scale 2, turned by +90 degrees.
    got = similarity_transform(np.array([[0.0, 0], [1, 0]]), np.array([[10.0, 10], [10, 12]]))
    np.testing.assert_allclose(got, [[0, -2, 10], [2, 0, 10]], atol=1e-12)


def test_noisy_points_give_the_least_squares_fit() -> None:
    rng = np.random.default_rng(3)
    src = DLIB_TEMPLATE * 100
    truth = similarity(12, 1.7, (40, 25))
    dst = apply(truth, src) + rng.normal(0, 0.8, src.shape)
    got = similarity_transform(src, dst)
    residual = ((apply(got, src) - dst) ** 2).sum()
    # No nearby similarity fits better (perturb angle, scale and shift in turn).
    for m in (similarity(12.3, 1.7, (40, 25)), truth, similarity(12, 1.72, (40.4, 25))):
        assert residual <= ((apply(m, src) - dst) ** 2).sum() + 1e-9
    np.testing.assert_allclose(got, truth, atol=0.05 * 100)


def test_a_mirror_image_is_not_fitted_by_a_reflection() -> None:
    src = DLIB_TEMPLATE * 100
    mirrored = src * np.array([-1.0, 1.0])
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0  # a rotation, never a flip


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (np.zeros((5, 2)), np.ones((5, 2))),  # all source points coincide
        (np.ones((1, 2)), np.ones((1, 2))),  # a single point
        (np.ones((5, 2)), np.ones((4, 2))),  # shapes differ
        (np.ones((5, 3)), np.ones((5, 3))),
    ],
)
def test_degenerate_inputs_are_refused(src: np.ndarray, dst: np.ndarray) -> None:
    with pytest.raises(LandmarksError):
        similarity_transform(src, dst)


def test_invert_affine() -> None:
    m = similarity(33, 0.7, (5, -2))
    pts = np.array([[1.0, 2.0], [30, -4]])
    np.testing.assert_allclose(apply(invert_affine(m), apply(m, pts)), pts, atol=1e-12)


# ------------------------------------------------------------------ align


def test_template_points_match_dlibs_template() -> None:
    # Square crop: dlib's (padding + p) / (1 + 2 padding) * size, in pixel centres.
    np.testing.assert_allclose(
        template_points((150, 150), 0.25), (DLIB_TEMPLATE + 0.25) / 1.5 * 150 - 0.5
    )
    # 48 wide, 56 high: a 48 px square, centred 4 px down.
    np.testing.assert_allclose(template_points((48, 56), 0.0), DLIB_TEMPLATE * 48 + [0, 4] - 0.5)


@pytest.mark.parametrize("rgb", [False, True])
@pytest.mark.parametrize(("angle", "scale"), [(0, 1.0), (23, 1.6), (-70, 0.8), (90, 3.0)])
def test_align_puts_drawn_landmarks_on_the_template(rgb: bool, angle: float, scale: float) -> None:
    """Dots drawn at the landmarks of a turned, scaled face land on the template points."""
    size, padding = (120, 140), 0.2
    target = template_points(size, padding)
    crop_to_image = similarity(angle, scale, (260.0, 240.0))
    points = apply(crop_to_image, target - np.array(size) / 2)
    # Gaussian dots (sub-pixel exact, unlike rasterised circles), 1.2 crop px wide.
    ys, xs = np.mgrid[0:480, 0:520].astype(float)
    dots = sum(
        np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * (1.2 * scale) ** 2)) for x, y in points
    )
    img = np.rint(255 * np.clip(dots, 0, 1)).astype(np.uint8)
    if rgb:
        img = np.stack([img, img // 2, img], axis=2)
    crop = align(img, face_at(points), size, padding)
    assert crop.shape == ((size[1], size[0], 3) if rgb else (size[1], size[0]))
    grey = crop.astype(float) if crop.ndim == 2 else crop.mean(axis=2)
    for tx, ty in target:
        ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
        window = (np.abs(xs - tx) <= 4) & (np.abs(ys - ty) <= 4)
        weights = grey * window
        assert weights.sum() > 0, "the dot is missing from the crop"
        cx, cy = (weights * xs).sum() / weights.sum(), (weights * ys).sum() / weights.sum()
        assert math.hypot(cx - tx, cy - ty) < 0.15, (cx, cy, tx, ty)


def test_align_of_a_turned_photo_equals_align_of_the_photo() -> None:
    img = smooth_texture(200, 160, seed=4)
    points = apply(similarity(8, 0.9, (80, 95)), DLIB_TEMPLATE * 80 - 40)
    upright = align(img, face_at(points), (64, 64))
    turned = np.rot90(img)  # counterclockwise: (x, y) -> (y, W - 1 - x)
    turned_points = np.stack([points[:, 1], img.shape[1] - 1 - points[:, 0]], axis=1)
    again = align(np.ascontiguousarray(turned), face_at(turned_points), (64, 64))
    assert np.abs(upright.astype(int) - again.astype(int)).max() <= 1


def test_align_shrinks_without_aliasing() -> None:
    """One-pixel stripes shown 8x smaller must average to grey, not alias to black or white."""
    stripes = np.zeros((1200, 1200), dtype=np.uint8)
    stripes[:, ::2] = 255
    points = apply(similarity(0, 8.0, (600, 600)), template_points((64, 64), 0.25) - 32)
    crop = align(stripes, face_at(points), (64, 64))
    assert abs(crop.mean() - 127.5) < 3 and crop.std() < 3


def test_align_outside_the_photo_is_black() -> None:
    img = np.full((100, 100), 200, dtype=np.uint8)
    points = apply(similarity(0, 1.0, (5, 50)), template_points((80, 80)) - 40)
    crop = align(img, face_at(points), (80, 80))
    assert crop[:, :20].max() == 0 and crop[:, 50:].min() == 200


def test_warp_identity_copies() -> None:
    img = smooth_texture(30, 40, rgb=False)
    out = warp_affine(img, np.array([[1.0, 0, 0], [0, 1, 0]]), (40, 30))
    np.testing.assert_array_equal(out, img)


# ------------------------------------------------------------------ dlib_chip


def dlib_shape(points: np.ndarray) -> dlib.full_object_detection:
    return dlib.full_object_detection(
        dlib.rectangle(0, 0, 1, 1), [dlib.point(int(x), int(y)) for x, y in points]
    )


@pytest.mark.parametrize("rgb", [True, False])
@pytest.mark.parametrize(
    ("angle", "eye_span", "center"),
    [
        (0, 60, (200, 180)),  # about the chip's own scale: plain bilinear
        (-13, 150, (260, 250)),  # one pyramid level
        (31, 420, (300, 280)),  # three levels
        (5, 100, (15, 30)),  # mostly outside the photo: black, never an error
    ],
)
def test_dlib_chip_is_dlibs_chip(rgb: bool, angle: float, eye_span: float, center: tuple) -> None:
    img = smooth_texture(560, 600, seed=int(eye_span), rgb=rgb)
    unit_span = DLIB_TEMPLATE[0, 0] - DLIB_TEMPLATE[2, 0]
    m = similarity(angle, eye_span / unit_span, center)
    points = np.rint(apply(m, DLIB_TEMPLATE - 0.5) + [[0.3, -0.2], [0, 0], [0, 0], [-1, 0], [0, 1]])
    ours = dlib_chip(img, face_at(points), 150, 0.25)
    theirs = dlib.get_face_chip(img, dlib_shape(points), 150, 0.25)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 0.01


def test_dlib_chip_other_sizes() -> None:
    img = smooth_texture(300, 300, seed=9)
    points = np.rint(apply(similarity(10, 140, (150, 150)), DLIB_TEMPLATE - 0.5))
    for size, padding in [(200, 0.1), (64, 0.4)]:
        ours = dlib_chip(img, face_at(points), size, padding)
        theirs = dlib.get_face_chip(img, dlib_shape(points), size, padding)
        assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 0.01


@pytest.mark.parametrize("shape", [(37, 41), (37, 41, 3), (9, 12), (8, 30), (30, 8)])
def test_pyramid_level_is_dlibs(shape: tuple[int, ...]) -> None:
    img = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    ours = pyramid_down2(img)
    theirs = dlib.pyramid_down(2)(img)
    assert ours.shape[:2] == theirs.shape[:2]
    np.testing.assert_array_equal(ours.reshape(theirs.shape), theirs)
