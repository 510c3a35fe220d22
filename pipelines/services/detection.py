"""Finding faces in gallery photos and probes, and the policies for what was found.

Detection runs once per image and detector version and is stored in SQL (``face_detection``,
``face``); a new detector version re-detects incrementally, as a new model re-embeds.

The detector (:class:`faces.detect.Detector`) is chosen by ``SIAMID_DETECTOR`` (the command
line's ``--detector``): dlib's HOG detector, dlib's CNN detector in torch, or HOG with the CNN
for the photos in which HOG finds nothing (:mod:`faces.methods`); both model files come with
``face_recognition_models``. The choice is part of the detector's name and version, so a
change re-detects incrementally.

Gallery runs and evaluation read, decode and prepare photos (HOG, the CNN's pyramids:
:meth:`faces.detect.Detector.prepare`) in DataLoader worker processes while this process runs
the CNN's network on ready batches (:func:`detect_files`; how many: :func:`detect_workers`,
``SIAMID_DETECT_WORKERS``); the faces are the same bit for bit as in one process.

Policies, per photo:
- no face, by either detector -> ``no_face`` (a detect-mode model cannot enrol it);
- the largest face too small to align (eyes' outer corners under
  :data:`faces.face.MIN_EYE_SPAN` px apart) -> ``too_small``, reported, not guessed;
- several faces -> ``multiple_faces``: the largest is enrolled and the others recorded, or, with
  ``multiple="refuse"``, none is enrolled;
- otherwise ``ok``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from faces.face import Face, is_too_small
from pipelines.services.detection_workers import (
    DETECT_BATCH,
    Ready,
    Rejected,
    cuda_present,
    detect_workers,
    prepared_batches,
)
from pipelines.services.encoding import FileItem
from pipelines.services.model_files import CNN_FACE_DETECTOR, SHAPE_PREDICTOR_5, model_file
from pipelines.services.paging import WorkPlan, keyset_pages
from pipelines.services.refusals import Refusal
from pipelines.services.runtime import Runtime
from siamese.images import DecodeLimits, ImageRejected, decode_bytes
from storage.faces import Detection, StoredFace

if TYPE_CHECKING:
    from faces.detect import Detector

logger = logging.getLogger(__name__)

#: What to do with a gallery photo of several people (``--multiple-faces``).
MULTIPLE_FACES: tuple[str, ...] = ("largest", "refuse")

Progress = Callable[[int, int], None]


_local = threading.local()


def detection_method() -> str:
    """The detector chosen for this process (``SIAMID_DETECTOR``, checked by the settings)."""
    from pipelines.settings import Settings

    return Settings().detector


def detector() -> Detector:
    """This thread's detector of the chosen method (dlib's scanner is not thread-safe; building
    one takes ~0.3 s). A changed ``SIAMID_DETECTOR`` builds the new one."""
    key = os.environ.get("SIAMID_DETECTOR", "")
    if getattr(_local, "detector", None) is None or _local.key != key:
        from faces.detect import Detector

        method = detection_method()
        _local.detector = Detector(
            model_file(SHAPE_PREDICTOR_5),
            cnn_path=model_file(CNN_FACE_DETECTOR),
            method=method,
            cnn_device="cuda" if method != "hog" and cuda_present() else "cpu",
        )
        _local.key = key
    return _local.detector


@dataclass(frozen=True)
class PhotoFaces:
    """What detection found in one photo and what the policy makes of it."""

    outcome: str  # ok | no_face | too_small | multiple_faces | error
    faces: list[Face] = field(default_factory=list)  # largest first
    chosen: int | None = None  # index of the face to enrol / embed
    detail: str | None = None

    @property
    def face(self) -> Face | None:
        return None if self.chosen is None else self.faces[self.chosen]


def classify(found: Sequence[Face], multiple: str = "largest") -> PhotoFaces:
    """Apply the policies above to the faces of one photo (largest first)."""
    if multiple not in MULTIPLE_FACES:
        raise ValueError(f"multiple must be one of {', '.join(MULTIPLE_FACES)}, got {multiple!r}")
    faces = sorted(found, key=lambda f: f.area, reverse=True)
    if not faces:
        return PhotoFaces("no_face", [], None, "no face found")
    if is_too_small(faces[0]):
        detail = f"the largest face's eyes are {faces[0].eye_span:.0f} px apart"
        return PhotoFaces("too_small", faces, None, detail)
    found_by = "found by the CNN fallback" if faces[0].found_by == "cnn" else None
    if len(faces) > 1:
        chosen = 0 if multiple == "largest" else None
        detail = f"{len(faces)} faces" + (f" ({found_by})" if found_by else "")
        return PhotoFaces("multiple_faces", faces, chosen, detail)
    return PhotoFaces("ok", faces, 0, found_by)


def as_array(image: Image.Image) -> np.ndarray:
    """A decoded image (mode L or RGB) as the uint8 array the detector takes."""
    return np.asarray(image)


def read_photo(path: str | Path, limits: DecodeLimits) -> Image.Image:
    """Safe decode (EXIF-rotated, grey or RGB); :class:`ImageRejected` says why not."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageRejected("missing", f"{path} does not exist") from None
    except OSError as exc:
        raise ImageRejected("unreadable", f"{path}: {exc.strerror or exc}") from None
    return decode_bytes(data, limits=limits, name=str(path)).image


def photo_array(path: str | Path, limits: DecodeLimits) -> np.ndarray:
    """:func:`read_photo` as the array the detector takes."""
    return as_array(read_photo(path, limits))


def detect_photo(image: Image.Image, multiple: str = "largest") -> PhotoFaces:
    return classify(detector().detect(as_array(image)), multiple)


def detect_file(path: str | Path, limits: DecodeLimits, multiple: str = "largest") -> PhotoFaces:
    """Read, decode and detect one file; a file that cannot be decoded is outcome ``error``."""
    try:
        return detect_photo(read_photo(path, limits), multiple)
    except ImageRejected as rej:
        return PhotoFaces("error", [], None, f"{rej.reason}: {rej.detail}")


def detect_files(
    paths: Sequence[str | Path],
    limits: DecodeLimits,
    multiple: str = "largest",
    *,
    batch: int = DETECT_BATCH,
    workers: int | None = None,
    seconds: list[float] | None = None,
) -> Iterator[PhotoFaces]:
    """:func:`detect_file` for many files, in order, ``batch`` photos per
    :meth:`faces.detect.Detector.finish`, prepared by :func:`detect_workers` DataLoader
    processes (``workers``: see there). ``seconds``, when given, gets each photo's detection
    time: its :meth:`~faces.detect.Detector.prepare` plus its share of its batch's ``finish``
    (decoding not counted), wherever each ran."""
    import time

    det = detector()
    read = functools.partial(photo_array, limits=limits)
    n = detect_workers(len(paths), workers)
    for photos in prepared_batches(paths, read, det, batch, n):
        ready = [p for p in photos if isinstance(p, Ready)]
        t0 = time.perf_counter()
        found = iter(det.finish([p.prepared for p in ready]))
        share = (time.perf_counter() - t0) / max(len(ready), 1)
        for p in photos:
            if isinstance(p, Rejected):
                yield PhotoFaces("error", [], None, f"{p.reason}: {p.detail}")
            else:
                yield classify(next(found), multiple)
            if seconds is not None:
                seconds.append(p.seconds + share if isinstance(p, Ready) else 0.0)


def store_detection(session: Session, image_id: int, found: PhotoFaces) -> None:
    """Record what the current detector found in one gallery image (in ``session``)."""
    from storage.faces import add_detection

    det = detector()
    add_detection(
        session=session,
        face_image_id=image_id,
        detector=det.name,
        detector_version=det.version,
        outcome=found.outcome,
        faces=stored_faces(found.faces, found.chosen),
        detail=found.detail,
    )


def detect_paths(
    paths: Sequence[str | Path],
    limits: DecodeLimits,
    progress: Progress | None = None,
    cache: Path | None = None,
) -> list[PhotoFaces]:
    """Detection for files outside the gallery (probes, evaluation sets), in order.

    ``cache``: a folder of earlier results by file content and detector version, so that an
    evaluation run again on the same photos detects nothing twice.
    """
    import hashlib
    import json

    version = hashlib.sha256(detector().version.encode()).hexdigest()[:16]
    out: list[PhotoFaces | None] = [None] * len(paths)
    entries: list[Path | None] = [None] * len(paths)
    done = 0
    for n, p in enumerate(paths):
        if cache is not None:
            try:
                digest = hashlib.sha256(Path(p).read_bytes()).hexdigest()
                entries[n] = cache / version / digest[:2] / f"{digest}.json"
            except OSError:
                entries[n] = None
        entry = entries[n]
        if entry is not None and entry.is_file():
            data = json.loads(entry.read_text())
            out[n] = PhotoFaces(
                data["outcome"],
                [Face.from_dict(f) for f in data["faces"]],
                data["chosen"],
                data["detail"],
            )
            done += 1
            if progress is not None:
                progress(done, len(paths))
    todo = [n for n, found in enumerate(out) if found is None]
    for n, found in zip(todo, detect_files([paths[n] for n in todo], limits), strict=True):
        out[n] = found
        entry = entries[n]
        if entry is not None:
            entry.parent.mkdir(parents=True, exist_ok=True)
            record = {
                "outcome": found.outcome,
                "faces": [f.to_dict() for f in found.faces],
                "chosen": found.chosen,
                "detail": found.detail,
            }
            entry.write_text(json.dumps(record))
        done += 1
        if progress is not None:
            progress(done, len(paths))
    return [found for found in out if found is not None]


def stored_faces(faces: Sequence[Face], chosen: int | None) -> list[StoredFace]:
    return [
        StoredFace(
            rank=i,
            box=tuple(f.box),  # type: ignore[arg-type]
            landmarks=np.asarray(f.landmarks).tolist(),
            score=f.score,
            eye_span=f.eye_span,
            chosen=i == chosen,
        )
        for i, f in enumerate(faces)
    ]


def to_face(stored: StoredFace) -> Face:
    return Face(box=stored.box, landmarks=np.asarray(stored.landmarks), score=stored.score)


@dataclass
class DetectionSummary:
    detector: str
    version: str
    detected: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)  # per photo

    def as_dict(self) -> dict[str, object]:
        ms = np.asarray(self.seconds) * 1e3
        return {
            "detector": self.detector,
            "detected": self.detected,
            "outcomes": dict(sorted(self.outcomes.items())),
            "ms_per_image": {
                "p50": float(np.percentile(ms, 50)) if ms.size else None,
                "p95": float(np.percentile(ms, 95)) if ms.size else None,
            },
        }


def plan_detection(rt: Runtime) -> WorkPlan:
    """How many accepted images the current detector version has not seen, and the largest of
    their ids: a count, no list."""
    from storage.faces import count_images_to_detect

    det = detector()
    with rt.sessions() as s:
        todo, last_id = count_images_to_detect(
            session=s, detector=det.name, detector_version=det.version
        )
    return WorkPlan(todo, last_id)


def undetected_chunks(rt: Runtime, plan: WorkPlan, size: int) -> Iterator[list[FileItem]]:
    """The images of ``plan`` in chunks of ``size``, by id, each one keyset page read when the
    one before has been taken (what one listing would have made)."""
    from storage.faces import images_to_detect

    det = detector()

    def read(after_id: int | None, limit: int) -> list[FileItem]:
        with rt.sessions() as s:
            return images_to_detect(
                session=s,
                detector=det.name,
                detector_version=det.version,
                after_id=after_id,
                limit=limit,
            )

    return keyset_pages(read, size, last_id=plan.last_id)


def chosen_gallery_faces(rt: Runtime, image_ids: Sequence[int] | None = None) -> dict[int, Face]:
    """face_image id -> the face enrolled for it, under the current detector."""
    from storage.faces import chosen_faces

    det = detector()
    with rt.sessions() as s:
        rows = chosen_faces(
            session=s,
            detector=det.name,
            detector_version=det.version,
            face_image_ids=list(image_ids) if image_ids is not None else None,
        )
    return {fid: to_face(f) for fid, f in rows.items()}


def current_detections(rt: Runtime, image_ids: Sequence[int]) -> dict[int, Detection]:
    """face_image id -> its stored detection under the current detector (absent: not yet
    detected)."""
    from storage.faces import detections_of

    det = detector()
    with rt.sessions() as s:
        return detections_of(
            session=s,
            face_image_ids=list(image_ids),
            detector=det.name,
            detector_version=det.version,
        )


def gallery_outcomes(rt: Runtime, image_ids: Sequence[int]) -> dict[int, Refusal]:
    """face_image id -> detection outcome with its detail, under the current detector."""
    found = current_detections(rt, image_ids)
    return {fid: Refusal(d.outcome, d.detail or "") for fid, d in found.items()}
