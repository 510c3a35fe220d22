"""dlib's CNN face detector (MMOD, ``mmod_human_face_detector.dat``) in torch, batched.

The network is the ``net_type`` of dlib's ``examples/dnn_mmod_face_detection_ex.cpp`` (and of
the python binding ``cnn_face_detection_model_v1``)::

    loss_mmod<con<1,9,9,1,1, rcon5<rcon5<rcon5<downsampler<
        input_rgb_image_pyramid<pyramid_down<6>>>>>>>>
    downsampler = relu(affine(con5d<32>(relu(affine(con5d<32>(relu(affine(con5d<16>(x)))))))))
    rcon5       = relu(affine(con<45,5,5,1,1>(x)))

read from dlib's file by :mod:`dlibfile.format`. Everything around the network reproduces
dlib's inference step for step, from dlib's sources (github.com/davisking/dlib):

* Input (``dlib/dnn/input.h``, ``input_rgb_image_pyramid``): the photo's pixels become
  ``(value - mean) / 256`` per RGB plane (means from the file) and are written into a zeroed
  tensor at the first rectangle of a tiled pyramid; each further level is the previous one
  resized by ``tt::resize_bilinear`` (corner-aligned bilinear, ``resize_image`` with
  ``x_scale = (in - 1) / (out - 1)``) in the normalised float domain, not on uint8 pixels.
* Tiling (``dlib/image_transforms/image_pyramid.h``, ``compute_tiled_image_pyramid_details``):
  levels shrink by ``floor(5/6 * size)`` while at least 5 rows remain; they go down a first
  column (``padding`` px apart, ``outer_padding`` around) until the rest fits beside them,
  then back up a second column from the bottom right, stopping before one would touch level 0.
  :func:`pyramid_layout` returns dlib's rectangles (inclusive corners) and the canvas size.
* Convolutions (``dlib/dnn/layers.h``, ``con_``): stride-2 layers are unpadded, stride-1
  layers pad by ``size / 2``; the ``affine`` after each (a frozen batch norm) is folded into
  it here (``W * gamma``, ``b * gamma + beta``, in float64).
* Output to boxes (``dlib/dnn/loss.h``, ``loss_mmod_::tensor_to_dets``): every output value
  above the threshold (0, or ``adjust_threshold``) is a detection; its position maps back
  through the layers (``p * stride - padding + size / 2`` each, so ``8 p + 14`` here) to the
  tiled image, where a window of the file's size (80x80) is centred on it
  (``centered_drect``: half of ``size - 1`` either side). The window maps to the photo
  through the level whose rectangle is nearest its centre (``tiled_pyramid_to_image``:
  ``nearest_rect``, then ``point_up`` once per level, ``p * 6/5 + 0.3``), and is rounded to
  whole pixels (``floor(x + 0.5)``) as dlib's ``rectangle`` conversion does.
* Non-max suppression (``loss_mmod_::to_label``): detections in order of falling score; one is
  dropped when it overlaps one already kept per ``test_box_overlap`` from the file
  (``dlib/image_processing/box_overlap_testing.h``: the intersection divided by the area of
  the box *bounding both rectangles* above 0.338, or covering more than 100% of either), with
  dlib's inclusive pixel areas ``(right - left + 1) * (bottom - top + 1)``.

Batches: photos of any sizes share one forward pass. Each photo's tiled pyramid sits at the
top left of a canvas as large as the largest in the batch; after each layer that dlib would pad
(the stride-1 ones) the activations outside a photo's own extent are zeroed, so the padding a
photo sees is exactly the zeros it would see alone. The results are bit-for-bit those of one
photo at a time, up to float summation order.

The pyramid of a photo is a pure function of its pixels (:func:`pyramid_input`, giving an
:class:`MmodInput`): DataLoader workers build them while the main process runs the network
on ready ones (:meth:`MmodDetector.detect_prepared`), which only copies each into its batch's
canvas.

Boxes are dlib ``rectangle`` corners (inclusive) in the pixels of the image given; the
:class:`faces.detect.Detector` maps them to the original photo.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlibfile.format import (
    MMOD_FILE,
    AffineLayer,
    ConvLayer,
    DlibFormatError,
    InputRgbPyramidLayer,
    MmodLoss,
    read_dlib_network,
)
from faces.errors import ModelFileError

logger = logging.getLogger(__name__)

#: ``input_rgb_image_pyramid<pyramid_down<6>>``: each level is 5/6 of the one before.
PYRAMID_N = 6
#: dlib's ``compute_tiled_image_pyramid_details`` stops at levels of fewer rows.
MIN_LEVEL_ROWS = 5

#: The network's layers, input first (what :func:`dlibfile.format.read_dlib_network` checks).
MMOD_TOKENS: tuple[str, ...] = (
    *("con", "affine", "relu") * 3,  # downsampler: con5d<16>, con5d<32>, con5d<32>
    *("con", "affine", "relu") * 3,  # three rcon5 (con<45,5,5,1,1>)
    "con",  # con<1,9,9,1,1>
)
# (filters, kernel, stride, padding) per convolution, as the example's net_type declares.
_GEOMETRY: tuple[tuple[int, int, int, int], ...] = (
    (16, 5, 2, 0),
    (32, 5, 2, 0),
    (32, 5, 2, 0),
    (45, 5, 1, 2),
    (45, 5, 1, 2),
    (45, 5, 1, 2),
    (1, 9, 1, 4),
)

Rect = tuple[int, int, int, int]  # dlib rectangle: left, top, right, bottom (inclusive)


# ------------------------------------------------------------------------------------------
# The tiled pyramid


@dataclass(frozen=True)
class PyramidLayout:
    """Where each pyramid level of an ``rows x cols`` photo lies in the tiled image."""

    rects: tuple[Rect, ...]  # level 0 (the photo) first; inclusive corners
    rows: int
    cols: int


def _level_sizes(rows: int, cols: int) -> list[tuple[int, int]]:
    rate = (PYRAMID_N - 1.0) / PYRAMID_N  # pyramid_rate(pyramid_down<6>), a double
    sizes = [(rows, cols)]
    while True:
        rows, cols = math.floor(rate * rows), math.floor(rate * cols)
        if rows * cols == 0 or rows < MIN_LEVEL_ROWS:
            return sizes
        sizes.append((rows, cols))


def pyramid_layout(
    rows: int, cols: int, padding: int = 10, outer_padding: int = 11
) -> PyramidLayout:
    """dlib's ``impl::compute_tiled_image_pyramid_details`` for ``pyramid_down<6>``."""
    if rows < 1 or cols < 1:
        raise ValueError(f"a {cols}x{rows} image has no pyramid")
    sizes = _level_sizes(rows, cols)
    h0, w0 = sizes[0]
    total_height = sum(h + padding for h, _ in sizes) - 2 * padding
    height = prev_width = 0
    for h, w in sizes:
        # Down the first column until the next level fits beside the previous one and the
        # first column holds at least half of the height below level 0.
        if w <= w0 - prev_width - padding and (height - h0) * 2 >= total_height - h0:
            break
        height += h + padding
        prev_width = w
    height -= padding
    rects: list[Rect] = []
    y = outer_padding
    i = 0
    while y < height + outer_padding and i < len(sizes):
        h, w = sizes[i]
        rects.append((outer_padding, y, outer_padding + w - 1, y + h - 1))
        y += h + padding
        i += 1
    y -= padding
    first = rects[0]
    while i < len(sizes):
        h, w = sizes[i]
        right, bottom = outer_padding + w0 - 1, y - 1
        rect = (right - (w - 1), bottom - (h - 1), right, bottom)
        if _intersects(first, rect):
            break  # dlib drops the levels that would overlap the photo
        rects.append(rect)
        y -= h + padding
        i += 1
    return PyramidLayout(tuple(rects), height + 2 * outer_padding, w0 + 2 * outer_padding)


def _intersects(a: Rect, b: Rect) -> bool:
    return max(a[0], b[0]) <= min(a[2], b[2]) and max(a[1], b[1]) <= min(a[3], b[3])


def pyramid_levels(planes: Tensor, layout: PyramidLayout) -> list[Tensor]:
    """The levels of ``planes`` (N, C, rows, cols), already normalised, level 0 first: each
    the one before resampled to its rectangle's size (corner-aligned bilinear, as dlib's
    ``tt::resize_bilinear``), in the float domain."""
    n, c, rows, cols = planes.shape
    l0, t0, r0, b0 = layout.rects[0]
    if (rows, cols) != (b0 - t0 + 1, r0 - l0 + 1):
        raise ValueError(f"planes of {cols}x{rows} do not fit level 0 of {layout}")
    levels = [planes]
    for left, top, right, bottom in layout.rects[1:]:
        levels.append(
            F.interpolate(
                levels[-1],
                size=(bottom - top + 1, right - left + 1),
                mode="bilinear",
                align_corners=True,
            )
        )
    return levels


def place_levels(levels: Sequence[Tensor], layout: PyramidLayout, out: Tensor) -> Tensor:
    """Write ``levels`` (each (..., h, w)) at their rectangles of the zeroed ``out``."""
    for level, (left, top, right, bottom) in zip(levels, layout.rects, strict=True):
        out[..., top : bottom + 1, left : right + 1] = level
    return out


def tile_pyramid(planes: Tensor, layout: PyramidLayout, out: Tensor | None = None) -> Tensor:
    """The tiled pyramid of ``planes`` (N, C, rows, cols), already normalised, as dlib builds it.

    ``out``, when given, is an (N, C, >= layout.rows, >= layout.cols) zeroed tensor to fill
    (a slot of a larger batch canvas); otherwise a new one of the layout's size is returned.
    """
    levels = pyramid_levels(planes, layout)
    if out is None:
        out = planes.new_zeros((*planes.shape[:2], layout.rows, layout.cols))
    return place_levels(levels, layout, out)


# ------------------------------------------------------------------------------------------
# The network


class MmodNet(nn.Module):
    """The detector's convolutions with their affine layers folded in; scores per position.

    ``forward(x, extents)``: ``x`` is (N, 3, H, W) tiled pyramids; ``extents`` (N, 2) the rows
    and columns of each photo's own canvas, or None when every photo fills ``x``. Returns
    (N, 1, h, w) scores, ``h = w`` math of three unpadded 5x5 stride-2 convolutions.
    """

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, filters, kernel, stride=stride, padding=padding)
            for c_in, (filters, kernel, stride, padding) in zip(
                (3, *(g[0] for g in _GEOMETRY[:-1])), _GEOMETRY, strict=True
            )
        )

    @staticmethod
    def output_size(rows: int, cols: int) -> tuple[int, int]:
        """The score map's size for an input canvas of ``rows x cols``."""
        for _, kernel, stride, padding in _GEOMETRY:
            rows = (rows + 2 * padding - kernel) // stride + 1
            cols = (cols + 2 * padding - kernel) // stride + 1
        return rows, cols

    @staticmethod
    def output_to_input() -> tuple[int, int]:
        """``(a, b)`` with input position ``a * p + b`` for output position ``p``
        (dlib's ``map_output_to_input`` through every layer: ``p * stride - pad + size / 2``)."""
        a, b = 1, 0
        for _, kernel, stride, padding in reversed(_GEOMETRY):
            a, b = a * stride, b * stride - padding + kernel // 2
        return a, b

    def forward(self, x: Tensor, extents: Tensor | None = None) -> Tensor:
        for i, conv in enumerate(self.convs):
            if extents is not None and _GEOMETRY[i][3] > 0:
                x = x * _extent_mask(x, extents, i)
            x = conv(x)
            if i < len(self.convs) - 1:
                x = F.relu(x, inplace=True)
        return x


def _extent_mask(x: Tensor, extents: Tensor, layer: int) -> Tensor:
    """1 inside each photo's own extent at ``layer``'s input, 0 beyond (N, 1, H, W)."""
    rows, cols = extents[:, 0].clone(), extents[:, 1].clone()
    for _, kernel, stride, padding in _GEOMETRY[:layer]:
        rows = torch.div(rows + 2 * padding - kernel, stride, rounding_mode="floor") + 1
        cols = torch.div(cols + 2 * padding - kernel, stride, rounding_mode="floor") + 1
    r = torch.arange(x.shape[2], device=x.device)
    c = torch.arange(x.shape[3], device=x.device)
    inside = (r.view(1, -1, 1) < rows.view(-1, 1, 1)) & (c.view(1, 1, -1) < cols.view(-1, 1, 1))
    return inside.unsqueeze(1).to(x.dtype)


# ------------------------------------------------------------------------------------------
# Detections


@dataclass(frozen=True)
class MmodDetection:
    """A face box as dlib gives it: inclusive pixel corners of the image searched, the score."""

    rect: Rect
    score: float


def windows_to_image(
    rows: np.ndarray, cols: np.ndarray, layout: PyramidLayout, window: tuple[int, int]
) -> np.ndarray:
    """dlib rectangles (K, 4) in the photo for score-map positions (``rows``, ``cols``)."""
    a, b = MmodNet.output_to_input()
    px = cols.astype(np.float64) * a + b
    py = rows.astype(np.float64) * a + b
    half_w, half_h = (window[0] - 1) / 2, (window[1] - 1) / 2  # centered_drect
    level = _nearest_rect(layout.rects, np.floor(px + 0.5), np.floor(py + 0.5))
    origin = np.asarray(layout.rects, dtype=np.float64)[level, :2]
    corners = np.stack(
        [
            px - half_w - origin[:, 0],
            py - half_h - origin[:, 1],
            px + half_w - origin[:, 0],
            py + half_h - origin[:, 1],
        ],
        axis=1,
    )
    ratio = PYRAMID_N / (PYRAMID_N - 1.0)
    for k in range(int(level.max(initial=0))):
        up = level > k  # point_up once per level, in dlib's order of operations
        corners[up] = corners[up] * ratio + 0.3
    return np.floor(corners + 0.5).astype(np.int64)


def _nearest_rect(rects: Sequence[Rect], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dlib's ``nearest_rect``: the first rectangle containing the point, else the nearest."""
    r = np.asarray(rects, dtype=np.float64)
    nx = np.clip(x[:, None], r[None, :, 0], r[None, :, 2])
    ny = np.clip(y[:, None], r[None, :, 1], r[None, :, 3])
    dist = np.hypot(nx - x[:, None], ny - y[:, None])
    return np.argmin(dist, axis=1)  # ties and containment (0) resolve to the first, as in dlib


def box_overlaps(a: np.ndarray, b: np.ndarray, iou: float, covered: float) -> np.ndarray:
    """dlib's ``test_box_overlap`` of rectangle ``a`` (4,) against each of ``b`` (K, 4)."""
    il = np.maximum(a[0], b[:, 0])
    it = np.maximum(a[1], b[:, 1])
    ir = np.minimum(a[2], b[:, 2])
    ib = np.minimum(a[3], b[:, 3])
    inner = np.where((il <= ir) & (it <= ib), (ir - il + 1.0) * (ib - it + 1.0), 0.0)
    outer = (np.maximum(a[2], b[:, 2]) - np.minimum(a[0], b[:, 0]) + 1.0) * (
        np.maximum(a[3], b[:, 3]) - np.minimum(a[1], b[:, 1]) + 1.0
    )
    area_a = (a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0)
    area_b = (b[:, 2] - b[:, 0] + 1.0) * (b[:, 3] - b[:, 1] + 1.0)
    hit = (inner / outer > iou) | (inner / area_a > covered) | (inner / area_b > covered)
    return (inner > 0) & hit


def non_max_suppression(
    rects: np.ndarray, scores: np.ndarray, iou: float, covered: float
) -> list[int]:
    """Indices kept by ``loss_mmod_::to_label``'s greedy suppression, highest score first."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for i in order:
        if kept and box_overlaps(rects[i], rects[kept], iou, covered).any():
            continue
        kept.append(int(i))
    return kept


# ------------------------------------------------------------------------------------------
# The detector


class MmodDetector:
    """dlib's CNN face detector: ``detect(images)`` gives each image's faces as dlib would.

    ``path``: dlib's ``mmod_human_face_detector.dat``. ``device``: "cpu" (default) or "cuda";
    on CUDA the network runs under float16 autocast (``autocast``) unless told otherwise.
    ``max_batch_pixels`` bounds the canvas pixels of one forward pass: on one CPU core
    batches of a few photos are as fast per photo as any (the activations of larger ones
    leave the caches), on a GPU larger batches keep it busy; the default is set per device.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        autocast: bool | None = None,
        max_batch_pixels: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.device = torch.device(device)
        self.autocast = self.device.type == "cuda" if autocast is None else bool(autocast)
        if max_batch_pixels is None:
            max_batch_pixels = 32_000_000 if self.device.type == "cuda" else 1_000_000
        self.max_batch_pixels = int(max_batch_pixels)
        net, loss, inp, self.digest = _load(self.path)
        self.net = net.to(self.device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.window = (loss.windows[0].width, loss.windows[0].height)
        self.nms = loss.nms
        self.mean_rgb = tuple(float(m) for m in inp.mean_rgb)
        self.padding, self.outer_padding = inp.padding, inp.outer_padding

    def layout(self, rows: int, cols: int) -> PyramidLayout:
        return pyramid_layout(rows, cols, self.padding, self.outer_padding)

    def prepare(self, image: np.ndarray) -> MmodInput:
        """:func:`pyramid_input` with this detector's means and padding: the CPU half of a
        search, which DataLoader workers can do while the network runs."""
        return pyramid_input(image, self.mean_rgb, self.padding, self.outer_padding)

    @torch.inference_mode()
    def score_maps(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, PyramidLayout]]:
        """Each image's score map (h, w) over its tiled pyramid, and the pyramid's layout."""
        return self._score_maps([self.prepare(im) for im in images])

    def detect(
        self, images: Sequence[np.ndarray], adjust_threshold: float = 0.0
    ) -> list[list[MmodDetection]]:
        """The faces dlib's ``cnn_face_detection_model_v1(image, 0)`` finds, for each image.

        Images are HxWx3 RGB or HxW grey uint8 (grey is repeated into three planes, as the
        binding's ``assign_image`` does). Detections are highest score first.
        """
        return self.detect_prepared([self.prepare(im) for im in images], adjust_threshold)

    @torch.inference_mode()
    def detect_prepared(
        self, inputs: Sequence[MmodInput], adjust_threshold: float = 0.0
    ) -> list[list[MmodDetection]]:
        """:meth:`detect` on pyramids already built (by :meth:`prepare`, perhaps in another
        process): the network's forward passes and the boxes, nothing per pixel."""
        return [
            self.boxes(scores, layout, adjust_threshold)
            for scores, layout in self._score_maps(inputs)
        ]

    def boxes(
        self, scores: np.ndarray, layout: PyramidLayout, adjust_threshold: float = 0.0
    ) -> list[MmodDetection]:
        """``loss_mmod_::to_label`` on one score map: threshold, map to the photo, suppress."""
        rows, cols = np.nonzero(scores > adjust_threshold)
        if rows.size == 0:
            return []
        values = scores[rows, cols].astype(np.float64)
        rects = windows_to_image(rows, cols, layout, self.window)
        kept = non_max_suppression(rects, values, self.nms.iou, self.nms.percent_covered)
        return [MmodDetection(tuple(int(v) for v in rects[i]), float(values[i])) for i in kept]  # type: ignore[arg-type]

    # ------------------------------------------------------------------ internals

    def _score_maps(self, inputs: Sequence[MmodInput]) -> list[tuple[np.ndarray, PyramidLayout]]:
        out: list[tuple[np.ndarray, PyramidLayout]] = [None] * len(inputs)  # type: ignore[list-item]
        for batch in self._batches([inp.layout for inp in inputs]):
            for i, scores, layout in self._forward([inputs[i] for i in batch]):
                out[batch[i]] = (scores, layout)
        return out

    def _batches(self, layouts: Sequence[PyramidLayout]) -> list[list[int]]:
        """Indices grouped so that one canvas (largest pyramid x count) stays bounded; photos
        of similar size go together so that little of a canvas is padding."""
        order = sorted(range(len(layouts)), key=lambda i: (layouts[i].rows, layouts[i].cols))
        batches: list[list[int]] = []
        current: list[int] = []
        rows = cols = 0
        for i in order:
            r, c = max(rows, layouts[i].rows), max(cols, layouts[i].cols)
            if current and r * c * (len(current) + 1) > self.max_batch_pixels:
                batches.append(current)
                current, r, c = [], layouts[i].rows, layouts[i].cols
            current.append(i)
            rows, cols = r, c
        if current:
            batches.append(current)
        return batches

    def _forward(self, inputs: Sequence[MmodInput]) -> list[tuple[int, np.ndarray, PyramidLayout]]:
        """One forward pass: the pyramids at the top left of one canvas of the largest size."""
        layouts = [inp.layout for inp in inputs]
        rows = max(lay.rows for lay in layouts)
        cols = max(lay.cols for lay in layouts)
        canvas = torch.empty(
            (len(inputs), 3, rows, cols), device=self.device, memory_format=torch.channels_last
        ).zero_()
        for i, inp in enumerate(inputs):
            place_levels([torch.from_numpy(level) for level in inp.levels], inp.layout, canvas[i])
        same = all((lay.rows, lay.cols) == (rows, cols) for lay in layouts)
        extents = None
        if not same:
            extents = torch.tensor([[lay.rows, lay.cols] for lay in layouts], device=self.device)
        with torch.autocast(self.device.type, enabled=self.autocast):
            scores = self.net(canvas, extents)
        scores = scores.float().cpu().numpy()[:, 0]
        out = []
        for i, lay in enumerate(layouts):
            h, w = MmodNet.output_size(lay.rows, lay.cols)
            out.append((i, np.ascontiguousarray(scores[i, :h, :w]), lay))
        return out


@dataclass(frozen=True)
class MmodInput:
    """One photo as the network reads it: its pyramid's levels (each (3, h, w) float32
    ``(value - mean) / 256``, level 0 first) and where they lie in the tiled image (which also
    maps the scores back to the photo). The levels without the padding between them are what
    passes between processes (numpy: pickled through the DataLoader's pipe, which costs less
    than torch's shared memory here); :meth:`MmodDetector.detect_prepared` places them in
    its batch's canvas (:meth:`pyramid` tiles one alone)."""

    levels: tuple[np.ndarray, ...]
    layout: PyramidLayout

    def pyramid(self) -> Tensor:
        """The tiled pyramid (3, layout.rows, layout.cols), zero between the levels."""
        out = torch.zeros((3, self.layout.rows, self.layout.cols))
        return place_levels([torch.from_numpy(lv) for lv in self.levels], self.layout, out)


def pyramid_input(
    image: np.ndarray,
    mean_rgb: Sequence[float],
    padding: int = 10,
    outer_padding: int = 11,
) -> MmodInput:
    """dlib's ``input_rgb_image_pyramid`` of one photo (HxWx3 RGB or HxW grey uint8): the
    photo normalised by the file's per-plane means, then its levels (:func:`pyramid_levels`).

    A pure function of the pixels, on the CPU: DataLoader workers build these while the main
    process runs the network (:meth:`MmodDetector.detect_prepared`)."""
    pixels = torch.from_numpy(np.require(_rgb(_check(image)), requirements=["C", "W"]))
    planes = pixels.permute(2, 0, 1).unsqueeze(0).to(torch.float32)
    mean = torch.tensor(tuple(mean_rgb), dtype=torch.float32).view(1, 3, 1, 1)
    layout = pyramid_layout(pixels.shape[0], pixels.shape[1], padding, outer_padding)
    with torch.inference_mode():
        levels = pyramid_levels((planes - mean) / 256.0, layout)
    return MmodInput(tuple(level[0].numpy() for level in levels), layout)


def _check(image: np.ndarray) -> np.ndarray:
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3))
    ):
        raise ValueError(
            "the CNN detector takes HxWx3 RGB or HxW grey uint8 arrays, got "
            f"{getattr(image, 'shape', type(image).__name__)} {getattr(image, 'dtype', '')}"
        )
    return image


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


def _load(path: Path) -> tuple[MmodNet, MmodLoss, InputRgbPyramidLayer, str]:
    """The folded network, its loss and input settings and the file's digest."""
    if not path.is_file():
        raise ModelFileError(
            f"no CNN face detector at {path}; pass the path of dlib's {MMOD_FILE} "
            "(pip install face-recognition-models ships it)"
        )
    try:
        net = read_dlib_network(path, MMOD_TOKENS, model_file=MMOD_FILE)
    except DlibFormatError as exc:
        raise ModelFileError(str(exc)) from exc
    if not isinstance(net.loss, MmodLoss) or not isinstance(net.input, InputRgbPyramidLayer):
        raise ModelFileError(
            f"{path}: holds a {type(net.loss).__name__} network on {type(net.input).__name__}, "
            f"not dlib's CNN face detector; pass {MMOD_FILE}"
        )
    if len(net.loss.windows) != 1 or net.loss.bounding_box_regression:
        raise ModelFileError(
            f"{path}: an MMOD detector with {len(net.loss.windows)} windows"
            f"{' and box regression' if net.loss.bounding_box_regression else ''}; this port "
            f"reads dlib's one-window face detector, {MMOD_FILE}"
        )
    model = MmodNet()
    convs = [layer for layer in net.layers if isinstance(layer, ConvLayer)]
    affines = [layer for layer in net.layers if isinstance(layer, AffineLayer)]
    with torch.no_grad():
        for i, (conv, layer) in enumerate(zip(model.convs, convs, strict=True)):
            assert isinstance(conv, nn.Conv2d) and conv.bias is not None
            found = (
                layer.num_filters,
                layer.in_channels,
                layer.kernel,
                layer.stride,
                layer.padding,
            )
            want = (
                conv.out_channels,
                conv.in_channels,
                conv.kernel_size,
                conv.stride,
                conv.padding,
            )
            if found != want:
                raise ModelFileError(
                    f"{path}: convolution {i + 1} is (filters, in, kernel, stride, padding) = "
                    f"{found}, dlib's face detector has {want}; pass {MMOD_FILE}"
                )
            weight = torch.from_numpy(layer.weight).double()
            bias = torch.zeros(layer.num_filters, dtype=torch.float64)
            if layer.bias is not None:
                bias = torch.from_numpy(layer.bias).double()
            if i < len(affines):  # affine(conv(x)) = conv'(x)
                gamma = torch.from_numpy(affines[i].gamma).double()
                beta = torch.from_numpy(affines[i].beta).double()
                weight, bias = weight * gamma.view(-1, 1, 1, 1), bias * gamma + beta
            conv.weight.copy_(weight.float())
            conv.bias.copy_(bias.float())
    model.requires_grad_(False).eval()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    logger.info("loaded dlib's CNN face detector from %s (%s)", path, digest)
    return model, net.loss, net.input, digest
