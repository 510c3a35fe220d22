"""Parity of the torch port of dlib's CNN face detector with dlib itself (``faces.mmod``).

dlib's ``cnn_face_detection_model_v1`` runs on the same pixels as the port; the photos are few
(dlib's CNN takes ~0.5-1 s each on one core): the sweep over every AT&T photo and hundreds of
celeba_wild photos is ``bench/bench_mmod.py``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import dlib
import numpy as np
import pytest
import torch
from PIL import Image

from faces.errors import ModelFileError
from faces.mmod import (
    MmodDetector,
    MmodNet,
    box_overlaps,
    non_max_suppression,
    pyramid_input,
    pyramid_layout,
    tile_pyramid,
)
from tests.faces.synth import CELEBA, need_dir

# celeba_wild photos, and AT&T portraits (subject, index); the AT&T ones are searched at 2x as
# the Detector does (their faces are under the 80 px window at 1x).
CELEBA_PHOTOS = ("7201/001085.jpg", "7204/128794.jpg", "7216/193486.jpg")
ATT_PHOTOS = ((1, 1), (7, 3), (23, 7))


@pytest.fixture(scope="module")
def mmod(cnn_path: Path) -> MmodDetector:
    torch.set_num_threads(1)
    return MmodDetector(cnn_path)


@pytest.fixture(scope="module")
def dlib_cnn(cnn_path: Path) -> dlib.cnn_face_detection_model_v1:
    return dlib.cnn_face_detection_model_v1(str(cnn_path))


def _dlib_boxes(cnn: dlib.cnn_face_detection_model_v1, image: np.ndarray) -> list[tuple]:
    return [
        ((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.confidence)
        for d in cnn(image, 0)
    ]


def _assert_same(found: list, expected: list, name: str) -> None:
    assert len(found) == len(expected), (name, found, expected)
    for det, (rect, score) in zip(found, expected, strict=True):
        assert np.abs(np.subtract(det.rect, rect)).max() <= 1, (name, det, rect)
        assert abs(det.score - score) < 1e-3, (name, det.score, score)


def _att_2x(att: Path, subject: int, index: int) -> np.ndarray:
    with Image.open(att / f"s{subject}" / f"{index}.pgm") as im:
        im = im.convert("RGB")
        return np.asarray(im.resize((im.width * 2, im.height * 2), Image.Resampling.BILINEAR))


# ------------------------------------------------------------------------------ layout


@pytest.mark.parametrize("rows, cols", [(112, 92), (400, 300), (224, 184), (37, 500), (900, 60)])
def test_pyramid_layout_is_dlibs_tiling(rows: int, cols: int) -> None:
    lay = pyramid_layout(rows, cols)
    sizes = [(b - t + 1, r - left + 1) for left, t, r, b in lay.rects]
    assert sizes[0] == (rows, cols) and lay.rects[0][:2] == (11, 11)  # outer padding
    assert lay.cols == cols + 22
    for (h0, w0), (h1, w1) in zip(sizes, sizes[1:], strict=False):
        # each level is pyramid_down<6> of the one before: the size dlib's resampler makes
        down = dlib.pyramid_down(6)(np.zeros((h0, w0), np.uint8))
        assert (h1, w1) == down.shape and h1 >= 5
    assert all(b - t + 1 >= 5 for _, t, _, b in lay.rects)
    for i, a in enumerate(lay.rects):  # inside the canvas, never overlapping
        assert 0 <= a[0] and 0 <= a[1] and a[2] < lay.cols and a[3] < lay.rows
        for b in lay.rects[i + 1 :]:
            gap_x = max(a[0], b[0]) - min(a[2], b[2]) - 1
            gap_y = max(a[1], b[1]) - min(a[3], b[3]) - 1
            assert max(gap_x, gap_y) >= 0, (a, b)
    for a, b in zip(lay.rects, lay.rects[1:], strict=False):  # consecutive levels: 10 px apart
        assert b[1] - a[3] - 1 == 10 or a[1] - b[3] - 1 == 10 or b[0] > a[2], (a, b)


def test_pyramid_layout_known_case() -> None:
    # Worked by hand from compute_tiled_image_pyramid_details for a 112x92 photo: the levels
    # go down one column (93, 77, ...) until the rest fits beside level 4, then up a second
    # column from the bottom right.
    # Levels: 112x92, 93x76, 77x63, 64x52, 53x43, 44x35, ... 5x4 (16 in all). Level 5 is the
    # first with room beside level 4 (35 <= 92 - 43 - 10) once the first column holds half of
    # the remaining height ((449 - 112) * 2 >= 752 - 112), so the first column ends at row 449.
    lay = pyramid_layout(112, 92)
    assert lay.rects[:3] == ((11, 11, 102, 122), (11, 133, 86, 225), (11, 236, 73, 312))
    assert lay.rects[4:6] == ((11, 397, 53, 449), (68, 406, 102, 449))
    assert len(lay.rects) == 16 and lay.rects[-1] == (99, 137, 102, 141)
    assert (lay.rows, lay.cols) == (461, 114)


def test_pyramid_levels_are_dlibs_bilinear_resampling() -> None:
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(97, 131)).astype(np.float32)
    lay = pyramid_layout(*plane.shape)
    tiled = tile_pyramid(torch.from_numpy(plane)[None, None], lay)[0, 0].numpy()
    expected = plane
    for left, t, r, b in lay.rects[1:]:
        expected = dlib.pyramid_down(6)(expected)
        # dlib's SIMD resampler computes source positions in float32
        assert np.abs(tiled[t : b + 1, left : r + 1] - expected).max() < 5e-4
    mask = np.ones_like(tiled, dtype=bool)
    for left, t, r, b in lay.rects:
        mask[t : b + 1, left : r + 1] = False
    assert not tiled[mask].any()  # everything between the levels stays 0


def test_a_photos_input_is_its_normalised_tiled_pyramid(mmod: MmodDetector) -> None:
    """``pyramid_input`` (what DataLoader workers compute): level 0 is ``(value - mean) / 256``
    per plane, the levels are those dlib tiles, and the network finds on it, pickled as a
    worker sends it, what ``detect`` finds on the photo."""
    photo = np.random.default_rng(1).integers(0, 256, size=(61, 83, 3), dtype=np.uint8)
    inp = pyramid_input(photo, mmod.mean_rgb, mmod.padding, mmod.outer_padding)
    assert inp.layout == pyramid_layout(61, 83) == mmod.layout(61, 83)
    assert [lv.shape for lv in inp.levels] == [
        (3, b - t + 1, r - left + 1) for left, t, r, b in inp.layout.rects
    ]
    mean = np.asarray(mmod.mean_rgb, np.float32)[:, None, None]
    level0 = (photo.transpose(2, 0, 1).astype(np.float32) - mean) / np.float32(256)
    assert np.array_equal(inp.levels[0], level0)
    assert torch.equal(inp.pyramid(), tile_pyramid(torch.from_numpy(level0)[None], inp.layout)[0])
    grey = pyramid_input(photo[:, :, 1], mmod.mean_rgb)  # grey: one plane, three times
    assert np.array_equal(grey.levels[0], (photo[:, :, 1].astype(np.float32) - mean) / 256)
    sent = pickle.loads(pickle.dumps(inp))
    found = mmod.detect_prepared([sent], adjust_threshold=-1.5)
    assert found == mmod.detect([photo], adjust_threshold=-1.5) and found[0]


# ------------------------------------------------------------------------------ NMS


def test_overlap_divides_by_the_box_bounding_both() -> None:
    a = np.array([0, 0, 9, 9])
    # Same height, shifted 5 px: intersection 50, union 150 (IoU 0.33), bounding box 150.
    # Shifted diagonally by (3, 3): intersection 49, union 151 (0.32) but bounding box 169
    # (0.29): at a threshold of 0.3 the union rule would drop it, dlib's rule keeps it.
    b = np.array([[5, 0, 14, 9], [3, 3, 12, 12], [20, 20, 29, 29]])
    assert box_overlaps(a, b, iou=0.3, covered=1.0).tolist() == [True, False, False]
    inside = np.array([[2, 2, 5, 5]])  # fully covered: only percent_covered < 1 drops it
    assert not box_overlaps(a, inside, iou=0.9, covered=1.0)[0]
    assert box_overlaps(a, inside, iou=0.9, covered=0.99)[0]
    rects = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [3, 3, 12, 12], [40, 0, 49, 9]])
    kept = non_max_suppression(rects, np.array([0.5, 0.9, 0.2, 0.1]), iou=0.3, covered=1.0)
    assert kept == [1, 3]  # 0 and 2 overlap the best box (1); 3 stands apart


# ------------------------------------------------------------------------------ network


def test_folded_network_matches_the_unfolded_layers(mmod: MmodDetector, cnn_path: Path) -> None:
    from dlibfile.format import AffineLayer, ConvLayer, read_dlib_network
    from faces.mmod import MMOD_TOKENS

    net = read_dlib_network(cnn_path, MMOD_TOKENS, model_file=cnn_path.name)
    x = torch.randn(1, 3, 120, 100, generator=torch.Generator().manual_seed(0)) * 0.3
    y = x.double()
    convs = [layer for layer in net.layers if isinstance(layer, ConvLayer)]
    affines = [layer for layer in net.layers if isinstance(layer, AffineLayer)]
    for i, conv in enumerate(convs):
        w = torch.from_numpy(conv.weight).double()
        b = torch.from_numpy(conv.bias).double() if conv.bias is not None else None
        y = torch.nn.functional.conv2d(y, w, b, stride=conv.stride, padding=conv.padding)
        if i < len(affines):
            gamma = torch.from_numpy(affines[i].gamma).double().view(1, -1, 1, 1)
            y = torch.relu(y * gamma + torch.from_numpy(affines[i].beta).double().view(1, -1, 1, 1))
    with torch.inference_mode():
        out = mmod.net(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == y.shape == (1, 1, *MmodNet.output_size(120, 100))
    assert (out.double() - y).abs().max() < 1e-4
    assert MmodNet.output_to_input() == (8, 14)


# ------------------------------------------------------------------------------ parity


@pytest.mark.att
def test_boxes_match_dlib_on_att(mmod: MmodDetector, dlib_cnn, att: Path) -> None:
    images = [_att_2x(att, s, i) for s, i in ATT_PHOTOS]
    found = mmod.detect(images)  # one batch
    for (s, i), image, dets in zip(ATT_PHOTOS, images, found, strict=True):
        expected = _dlib_boxes(dlib_cnn, image)
        assert expected, "dlib finds the AT&T face at 2x"
        _assert_same(dets, expected, f"s{s}/{i}")


@pytest.mark.celeba
def test_boxes_match_dlib_on_celeba(mmod: MmodDetector, dlib_cnn) -> None:
    root = need_dir(CELEBA)
    images = [np.asarray(Image.open(root / name).convert("RGB")) for name in CELEBA_PHOTOS]
    grey = np.asarray(Image.open(root / CELEBA_PHOTOS[0]).convert("L"))
    found = mmod.detect([*images, grey])  # mixed sizes and a grey photo in one batch
    for name, image, dets in zip([*CELEBA_PHOTOS, "grey"], [*images, grey], found, strict=True):
        _assert_same(dets, _dlib_boxes(dlib_cnn, image), name)


@pytest.mark.celeba
def test_a_batch_gives_what_one_photo_at_a_time_gives(mmod: MmodDetector) -> None:
    root = need_dir(CELEBA)
    images = [np.asarray(Image.open(root / name).convert("RGB")) for name in CELEBA_PHOTOS]
    images.append(images[0][:150, :200].copy())  # a much smaller canvas beside the others
    batch = mmod.score_maps(images)
    for image, (scores, layout) in zip(images, batch, strict=True):
        ((alone, alone_layout),) = mmod.score_maps([image])
        assert layout == alone_layout and scores.shape == alone.shape
        assert np.abs(scores - alone).max() < 1e-4


def test_model_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no CNN face detector"):
        MmodDetector(tmp_path / "missing.dat")
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x01\x0aloss_mmod_" + b"\x00" * 20)
    with pytest.raises(ModelFileError, match=r"junk\.dat.*mmod_human_face_detector\.dat"):
        MmodDetector(junk)
    with pytest.raises(ValueError, match="uint8"):
        pyramid_input(np.zeros((10, 10, 3), np.float32), (0.0, 0.0, 0.0))
