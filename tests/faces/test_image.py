"""Accepted inputs, resampling and the exact mapping of working-copy points to the photo."""

from __future__ import annotations

import numpy as np
import pytest

from faces import ImageFormatError
from faces.image import WorkingCopy, check_image, reduce_by, resample, scale_for


@pytest.mark.parametrize(
    ("image", "hint"),
    [
        (np.zeros((10, 10), dtype=np.uint16), "8-bit"),
        (np.zeros((10, 10, 3), dtype=np.float32), "8-bit"),
        (np.zeros((10, 10, 4), dtype=np.uint8), "convert"),  # RGBA or CMYK
        (np.zeros((10, 10, 2), dtype=np.uint8), "convert"),
        (np.zeros((2, 10, 10, 3), dtype=np.uint8), "HxW"),
        (np.zeros((0, 10), dtype=np.uint8), "empty"),
        ([[0, 1], [2, 3]], "numpy"),
    ],
)
def test_unusable_inputs_say_what_to_do(image: object, hint: str) -> None:
    with pytest.raises(ImageFormatError, match=hint):
        check_image(image)


def test_grey_rgb_and_single_channel_are_accepted() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert check_image(grey).shape == (3, 4)
    assert check_image(grey[:, :, None]).shape == (3, 4)
    strided = np.zeros((6, 8, 3), dtype=np.uint8)[::2, ::2]
    out = check_image(strided)
    assert out.shape == (3, 4, 3) and out.flags.c_contiguous


def test_reduce_by_averages_blocks_in_bands() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1031, 37, 3), dtype=np.uint8)  # taller than one band
    out = reduce_by(img, 4)
    expected = img[:1028, :36].reshape(257, 4, 9, 4, 3).astype(float).mean(axis=(1, 3))
    np.testing.assert_array_equal(out, np.rint(expected))


def test_resampled_points_map_exactly() -> None:
    """A blob's centre, found on the copy and mapped back, is where it is on the original."""
    centre = np.array([123.3, 77.8])
    ys, xs = np.mgrid[0:150, 0:200].astype(np.float64)
    blob = 250 * np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * 9.0**2))
    img = np.rint(blob).astype(np.uint8)
    for size in [(400, 300), (800, 600), (71, 53), (23, 17)]:
        copy, (sx, sy) = resample(img, size)
        assert copy.shape == (size[1], size[0])
        cy, cx = np.mgrid[0 : size[1], 0 : size[0]]
        w = copy.astype(np.float64)
        found = np.array([(w * cx).sum() / w.sum(), (w * cy).sum() / w.sum()])
        back = (found + 0.5) / np.array([sx, sy]) - 0.5
        # Within a tenth of a copy pixel (plus the grey-level rounding of the tiny copies).
        assert np.abs(back - centre).max() < 0.1 / min(sx, sy) + 0.1, (size, back)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
@pytest.mark.parametrize("scale", [1.0, 2.0, 0.5])
def test_working_copy_round_trips(turns: int, scale: float) -> None:
    rng = np.random.default_rng(turns)
    img = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    copy = WorkingCopy.make(img, scale=scale, region=(5, 2, 51, 30), quarter_turns=turns, pad=3)
    pts = rng.uniform(0, 40, (20, 2))
    np.testing.assert_allclose(copy.points_from_original(copy.points_to_original(pts)), pts)
    # The padding is excluded from `inner`, which maps back onto the region.
    np.testing.assert_allclose(copy.box_to_original(copy.inner), (5, 2, 51, 30), atol=1e-9)
    if scale == 1.0:  # every pixel of the copy shows the original pixel it maps to
        h, w = copy.pixels.shape
        ys, xs = np.mgrid[3 : h - 3, 3 : w - 3]
        pts = np.stack([xs.ravel(), ys.ravel()], axis=1)
        orig = np.rint(copy.points_to_original(pts)).astype(int)
        np.testing.assert_array_equal(
            copy.pixels[ys.ravel(), xs.ravel()], img[orig[:, 1], orig[:, 0]]
        )


def test_scale_rule() -> None:
    kw = {"upsample_below": 800, "max_upsample": 2, "max_pixels": 8_000_000}
    assert scale_for(400, 300, **kw) == 2.0  # web photo: 40 px faces become 80 px
    assert scale_for(372, 300, **kw) == 2.0
    assert scale_for(92, 112, **kw) == 2.0  # AT&T portrait
    assert scale_for(799, 500, **kw) == 2.0
    assert scale_for(800, 500, **kw) == 1.0
    assert scale_for(1024, 768, **kw) == 1.0
    # With max_upsample=4 doubling repeats while the longer side stays under upsample_below.
    assert scale_for(92, 112, **{**kw, "max_upsample": 4}) == 4.0
    assert scale_for(372, 300, **{**kw, "max_upsample": 4}) == 2.0
    assert scale_for(30000, 1200, **kw) == pytest.approx((8e6 / 36e6) ** 0.5)
