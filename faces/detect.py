"""``Detector``: faces and their five landmarks in a photo, with dlib's HOG detector, dlib's CNN
face detector (ported to torch, :mod:`faces.mmod`) or HOG with the CNN for the photos HOG finds
no face in (``method``: ``hog``, ``cnn``, ``hog+cnn``; :mod:`faces.methods`).

Why these choices:

- dlib's HOG frontal face detector (``get_frontal_face_detector``) runs on the CPU in a few
  milliseconds per small photo, needs no model download and is what the 5-point shape
  predictor was trained behind; it finds upright, roughly frontal faces.
- Its sliding window is 80x80 px, so faces under ~80 px are missed: photos whose longer side is
  under ``upsample_below`` are enlarged 2x first, which is what finds the ~40 px faces of a
  400 px street photo. Larger photos are searched as they are. Enlarging 4x finds no more AT&T
  faces than 2x (398 of 400 either way, with the border below) at 2.5x the time, so it is
  off by default (``max_upsample``).
- Very large photos (over ``max_pixels``) are searched on a reduced copy so that time and
  memory stay bounded; the landmarks of each face found are then refined on a moderately sized
  crop of the original around that face, so they keep the original's precision.
- The working copy gets a replicated border of ``pad`` px: without it the window cannot be
  centred on a face that touches the border (AT&T's 92x112 portraits: 391 of 400 found without
  the border, 398 with it).
- HOG finds upright, roughly frontal faces only: on celeba_wild's in-the-wild photos it finds
  none in 256 of 5,420 (4.7%; turned heads, tilted faces, hands, hats). dlib's CNN (MMOD) face
  detector (``mmod_human_face_detector.dat``) finds a face in 233 of those 256, and dlib's
  ResNet then names 70% of them right (their nearest photo is the same person). dlib's own
  code costs ~0.6 s per 400x300 photo on one core; the torch port gives the same boxes
  (bench/bench_mmod.py) an order of magnitude faster and takes many photos per forward
  (:meth:`Detector.detect_many`). The CNN searches a photo once at its size (reduced to
  ``cnn_max_pixels``), then enlarged 2x if it found nothing, the photo is under
  ``upsample_below`` and the copy stays within ``cnn_max_pixels``: alone (``cnn``) or on
  the photos HOG finds nothing in (``hog+cnn``). Its faces get the same 5-point landmarks
  (dlib's 5-point model was trained on both detectors' boxes) and ``found_by="cnn"``.
- Everything is mapped back to the ORIGINAL photo's coordinates (see :mod:`faces.image`), and
  faces come largest first, the usual subject of a photo.

``name`` and ``version`` identify the detector and every parameter that changes its output, so
that storage can tell which photos to detect again when any of them changes.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import dlib
import numpy as np

from faces.errors import ModelFileError
from faces.face import Face
from faces.image import Box, WorkingCopy, check_image, scale_for
from faces.methods import check_method

if TYPE_CHECKING:
    from faces.mmod import MmodDetector, MmodInput

logger = logging.getLogger(__name__)

#: Bumped whenever this module changes how it turns pixels into faces, so that ``version``
#: changes with it even when dlib and the parameters do not.
ALGORITHM_REVISION = 1

#: Landmarks of a face found on a reduced copy are refined on a crop of the original in which
#: the face box is about this wide (px), or at full resolution when the face is smaller.
REFINE_FACE_WIDTH = 320

_SP5_PARTS = 5


_NAMES = {"hog": "dlib-hog+sp5", "hog+cnn": "dlib-hog+mmod+sp5", "cnn": "dlib-mmod+sp5"}

Found = list[tuple[dlib.rectangle, float]]


@dataclass(frozen=True)
class Prepared:
    """One photo as :meth:`Detector.prepare` leaves it for :meth:`Detector.finish`: the
    checked pixels, HOG's faces (empty when HOG did not run or found none) and, when the CNN
    is to search it, the working copy and pyramid of its first search (picklable: DataLoader
    workers return these)."""

    image: np.ndarray
    faces: list[Face]
    cnn: tuple[WorkingCopy, MmodInput] | None


class Detector:
    """Detects faces with dlib's HOG and/or CNN detector and places dlib's five landmarks.

    ``shape_predictor_path`` is dlib's ``shape_predictor_5_face_landmarks.dat`` (the service
    layer passes ``model_file(SHAPE_PREDICTOR_5)``). ``method`` is ``hog``, ``cnn`` or
    ``hog+cnn`` (:mod:`faces.methods`); the CNN ones need ``cnn_path``, dlib's
    ``mmod_human_face_detector.dat``. Without ``method``, ``cnn_path`` means ``hog+cnn`` and
    its absence ``hog``. ``cnn_device``: where the CNN runs ("cpu", or "cuda" with float16
    autocast). Parameters:

    - ``upsample_below``: photos whose longer side is under this many pixels are enlarged 2x
      so that faces of ~40 px are found: the default, 800, enlarges the usual 400-640 px web
      photos and AT&T's 92x112 portraits. ``max_upsample`` (a power of two, default 2) allows
      repeated doubling while the longer side stays under ``upsample_below``, for thumbnails
      whose faces are smaller still.
    - ``max_pixels``: photos with more pixels are searched on a copy reduced to this many
      (faces then need ~80 px in that copy). 8 MP keeps a phone photo at full resolution while
      bounding the search to about a second and a few hundred MB.
    - ``adjust_threshold``: added to dlib's decision threshold; negative finds more faces and
      more false ones (``score`` records each face's margin).
    - ``pad``: replicated border, in working-copy pixels, so faces at the edge are found.
    - ``rotations``: counterclockwise turns (0, 90, 180, 270 degrees) tried in this order
      until one finds a face; ``(0,)`` by default, since turning costs a full search per angle
      and photos should be EXIF-rotated by the caller. Faces found on a turned copy are still
      given in the original photo's coordinates, so alignment makes them upright.

    Building one takes ~0.3 s (dlib deserialises its HOG model); the shape predictor is loaded
    once per file and shared. A detector is not thread-safe (dlib's scanner keeps per-call
    state): use one per thread or process.
    """

    def __init__(
        self,
        shape_predictor_path: str | os.PathLike[str],
        *,
        upsample_below: int = 800,
        max_upsample: int = 2,
        max_pixels: int = 8_000_000,
        adjust_threshold: float = 0.0,
        pad: int = 32,
        rotations: Sequence[int] = (0,),
        cnn_path: str | os.PathLike[str] | None = None,
        cnn_max_pixels: int = 1_000_000,
        method: str | None = None,
        cnn_device: str = "cpu",
    ) -> None:
        if upsample_below < 0:
            raise ValueError(f"upsample_below must be >= 0 px, got {upsample_below}")
        if max_upsample < 1 or max_upsample & (max_upsample - 1):
            raise ValueError(f"max_upsample must be a power of two >= 1, got {max_upsample}")
        if max_pixels < 80 * 80:
            raise ValueError(f"max_pixels must allow at least one 80x80 window, got {max_pixels}")
        if pad < 0:
            raise ValueError(f"pad must be >= 0 px, got {pad}")
        if not rotations or any(r % 90 for r in rotations):
            raise ValueError(f"rotations must be multiples of 90 degrees, got {tuple(rotations)}")
        if cnn_max_pixels < 80 * 80:
            raise ValueError(f"cnn_max_pixels must allow an 80x80 copy, got {cnn_max_pixels}")
        self.method = check_method(method or ("hog" if cnn_path is None else "hog+cnn"))
        if self.method != "hog" and cnn_path is None:
            raise ValueError(
                f"the {self.method} detector needs cnn_path (mmod_human_face_detector.dat)"
            )
        self.upsample_below = int(upsample_below)
        self.max_upsample = int(max_upsample)
        self.max_pixels = int(max_pixels)
        self.adjust_threshold = float(adjust_threshold)
        self.pad = int(pad)
        self.rotations = tuple(dict.fromkeys(int(r) % 360 for r in rotations))
        self.shape_predictor_path = Path(shape_predictor_path)
        self._predictor, self._model_digest = _load_shape_predictor(self.shape_predictor_path)
        self._detector = dlib.get_frontal_face_detector()
        self.cnn_max_pixels = int(cnn_max_pixels)
        self.cnn_path = None if cnn_path is None or self.method == "hog" else Path(cnn_path)
        self._cnn: MmodDetector | None = None
        if self.cnn_path is not None:
            self._cnn = _load_cnn(self.cnn_path, cnn_device)

    @property
    def name(self) -> str:
        """Which detectors and landmark model: ``dlib-hog+sp5``, ``dlib-hog+mmod+sp5`` (HOG,
        then the CNN where HOG finds nothing) or ``dlib-mmod+sp5`` (the CNN alone)."""
        return _NAMES[self.method]

    @property
    def version(self) -> str:
        """Everything that changes this detector's output, as one string.

        dlib's version, this module's revision, the shape predictor file's digest and each
        parameter; with the CNN, its file's digest (the torch port: ``mmod-torch``, so
        detections of dlib's own CNN are redone once), its pixel budget and the method, so that
        ``cnn`` and ``hog+cnn`` differ here too (the evaluation's cache is keyed on the version
        alone). Storage compares it with the version that detected a photo before.
        """
        rotations = ",".join(str(r) for r in self.rotations)
        cnn = ""
        if self._cnn is not None:
            cnn = f";mmod-torch:{self._cnn.digest};cnnpx<={self.cnn_max_pixels};{self.method}"
        return (
            f"dlib{dlib.__version__};rev{ALGORITHM_REVISION};sp5:{self._model_digest}"
            f";up<{self.upsample_below}x{self.max_upsample};px<={self.max_pixels}"
            f";thr{self.adjust_threshold:g};pad{self.pad};rot{rotations}{cnn}"
        )

    def __repr__(self) -> str:
        return f"Detector({self.name} {self.version})"

    def detect(self, image: np.ndarray) -> list[Face]:
        """The faces in ``image`` (HxWx3 RGB or HxW grey, uint8), largest first.

        Coordinates are the original image's, whatever copy they were found on. A photo with
        no face gives ``[]``. Raises :class:`faces.errors.ImageFormatError` for other inputs.
        """
        return self.detect_many([image])[0]

    def detect_many(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """:meth:`detect` for each image; the CNN searches them in batches (one forward pass
        for many photos), which is what makes it fast. ``finish(prepare(image) for each)``."""
        return self.finish([self.prepare(image) for image in images])

    def prepare(self, image: np.ndarray) -> Prepared:
        """Everything this detector does to one photo before the CNN's network runs: the
        HOG search with its landmarks (``hog``, ``hog+cnn``) and, when the CNN is to search
        the photo (``cnn``, or HOG found nothing), its working copy and tiled pyramid.

        Per photo and on the CPU, so DataLoader worker processes can run it (the detector
        reaches them by fork) while this process runs :meth:`finish` on earlier batches;
        ``finish([prepare(im) ...])`` is :meth:`detect_many` either way."""
        img = check_image(image)
        faces = self._hog_search(img) if self.method != "cnn" else []
        return Prepared(img, faces, None if faces else self._cnn_input(img, 0))

    def finish(self, prepared: Sequence[Prepared]) -> list[list[Face]]:
        """The faces of photos :meth:`prepare` made ready, largest first: the CNN's network on
        every pyramid in batches, its boxes' landmarks, and the next scale of each photo the
        CNN found nothing in (built here: few photos)."""
        found = [list(p.faces) for p in prepared]
        pending = [(i, p.cnn) for i, p in enumerate(prepared) if p.cnn is not None]
        step = 0
        while pending:
            assert self._cnn is not None
            detections = self._cnn.detect_prepared([inp for _, (_, inp) in pending])
            later: list[tuple[int, tuple[WorkingCopy, MmodInput]]] = []
            for (i, (copy, _)), dets in zip(pending, detections, strict=True):
                img = prepared[i].image
                faces = self._faces_on(
                    img, copy, [(dlib.rectangle(*d.rect), d.score) for d in dets]
                )
                if faces:
                    found[i] = [replace(f, found_by="cnn") for f in faces]
                elif (more := self._cnn_input(img, step + 1)) is not None:
                    later.append((i, more))
            pending = later
            step += 1
        for p, faces in zip(prepared, found, strict=True):
            faces.sort(key=lambda f: (-f.area, -f.score))
            logger.debug("%dx%d photo: %d face(s)", p.image.shape[1], p.image.shape[0], len(faces))
        return found

    # ------------------------------------------------------------------ internals

    def _hog_search(self, img: np.ndarray) -> list[Face]:
        h, w = img.shape[:2]
        scale = scale_for(
            w,
            h,
            upsample_below=self.upsample_below,
            max_upsample=self.max_upsample,
            max_pixels=self.max_pixels,
        )
        base = WorkingCopy.make(img, scale=scale)
        for degrees in self.rotations:
            copy = base.turned(degrees // 90, self.pad)
            faces = self._faces_on(img, copy, self._hog(copy.pixels))
            if faces:
                if degrees:
                    logger.debug(
                        "found %d face(s) after turning by %d degrees", len(faces), degrees
                    )
                return faces
        return []

    def _hog(self, pixels: np.ndarray) -> Found:
        rects, scores, _ = self._detector.run(pixels, 0, self.adjust_threshold)
        return list(zip(rects, scores, strict=True))

    def _cnn_scales(self, img: np.ndarray) -> list[float]:
        """The photo at its size (reduced to ``cnn_max_pixels``), then 2x when small."""
        h, w = img.shape[:2]
        scales = [min(1.0, math.sqrt(self.cnn_max_pixels / (w * h)))]
        if max(w, h) < self.upsample_below and 4 * w * h <= self.cnn_max_pixels:
            scales.append(2.0)  # then scales[0] is 1: the photo is within the budget
        return scales

    def _cnn_input(self, img: np.ndarray, step: int) -> tuple[WorkingCopy, MmodInput] | None:
        """The CNN's ``step``-th search of ``img`` (its scales: :meth:`_cnn_scales`), ready
        for the network: the working copy and its pyramid; None when there is none."""
        if self._cnn is None or step >= len(scales := self._cnn_scales(img)):
            return None
        copy = WorkingCopy.make(img, scale=scales[step], pad=self.pad)
        return copy, self._cnn.prepare(copy.pixels)

    def _faces_on(self, img: np.ndarray, copy: WorkingCopy, found: Found) -> list[Face]:
        il, it, ir, ib = copy.inner
        faces: list[Face] = []
        for rect, score in found:
            cx, cy = (rect.left() + rect.right() + 1) / 2, (rect.top() + rect.bottom() + 1) / 2
            if not (il <= cx < ir and it <= cy < ib):
                continue  # a "face" made of the replicated border
            box = copy.box_to_original(
                (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
            )
            landmarks = self._landmarks(img, copy, rect, box)
            faces.append(Face(box=box, landmarks=landmarks, score=float(score)))
        return faces

    def _landmarks(
        self, img: np.ndarray, copy: WorkingCopy, rect: dlib.rectangle, box: Box
    ) -> np.ndarray:
        """The five landmarks of the face in ``rect``, in original coordinates.

        On an enlarged or full-size copy they come from that copy. On a reduced copy they are
        placed again on a crop of the original around the face, at up to full resolution.
        """
        face_width = box[2] - box[0]
        refine_scale = min(1.0, REFINE_FACE_WIDTH / max(face_width, 1.0))
        if min(copy.scale) >= 1.0 or refine_scale <= min(copy.scale) * 1.05:
            return copy.points_to_original(_parts(self._predictor(copy.pixels, rect)))
        margin_x, margin_y = 0.5 * face_width, 0.5 * (box[3] - box[1])
        region = (
            math.floor(box[0] - margin_x),
            math.floor(box[1] - margin_y),
            math.ceil(box[2] + margin_x),
            math.ceil(box[3] + margin_y),
        )
        crop = WorkingCopy.make(
            img, scale=refine_scale, region=region, quarter_turns=copy.quarter_turns, pad=self.pad
        )
        left, top, right, bottom = crop.box_from_original(box)
        crop_rect = dlib.rectangle(round(left), round(top), round(right) - 1, round(bottom) - 1)
        return crop.points_to_original(_parts(self._predictor(crop.pixels, crop_rect)))


def _parts(shape: dlib.full_object_detection) -> np.ndarray:
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def _load_shape_predictor(path: Path) -> tuple[dlib.shape_predictor, str]:
    """dlib's shape predictor at ``path``, checked to be a 5-point one, and its digest.

    Loading takes a few hundred ms, so detectors built on the same unchanged file share one
    (dlib's predictor is read-only once loaded).
    """
    if not path.is_file():
        raise ModelFileError(
            f"no shape predictor at {path}; pass the path of dlib's "
            "shape_predictor_5_face_landmarks.dat (pip install face-recognition-models ships it)"
        )
    stat = path.stat()
    return _load_cached(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_cached(path: Path, size: int, mtime_ns: int) -> tuple[dlib.shape_predictor, str]:
    del size, mtime_ns  # part of the cache key only: a changed file is loaded again
    try:
        predictor = dlib.shape_predictor(str(path))
    except RuntimeError as exc:
        raise ModelFileError(
            f"{path} is not a dlib shape predictor ({exc}); pass "
            "shape_predictor_5_face_landmarks.dat"
        ) from exc
    probe = predictor(np.zeros((16, 16), dtype=np.uint8), dlib.rectangle(0, 0, 15, 15))
    if probe.num_parts != _SP5_PARTS:
        raise ModelFileError(
            f"{path} places {probe.num_parts} landmarks, this package needs dlib's 5-point "
            "model: pass shape_predictor_5_face_landmarks.dat"
        )
    return predictor, _file_digest(path)


def _load_cnn(path: Path, device: str) -> MmodDetector:
    """dlib's CNN face detector at ``path`` in torch; a clear error when it is not one. Loaded
    only when asked for, so that HOG alone does not import torch."""
    from faces.mmod import MmodDetector

    return MmodDetector(path, device=device)


def _file_digest(path: Path) -> str:
    """The first 12 hex digits of the file's SHA-256: which model file, not where it lives."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]
