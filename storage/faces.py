"""Face detections per image and detector version, and the faces they found. Never commits.

Detection runs once per image and is kept: a row in ``face_detection`` says that this detector
version has seen the image (whatever it found), so a new version re-detects only the images
with no row for it, as a new model version re-embeds only the images with no vector.

Plain data in and out: :class:`StoredFace` and :class:`Detection` carry floats and lists, so
this module needs nothing from :mod:`faces` (the service converts ``faces.Face`` records).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from storage.models import DETECTION_OUTCOMES, DetectedFace, FaceDetection, FaceImage

# Bound the number of parameters of one IN (...) query (SQLite's limit is the lowest).
_CHUNK = 500


@dataclass(frozen=True)
class StoredFace:
    """One detected face: ``box`` is (left, top, right, bottom) and ``landmarks`` five ``[x, y]``
    pairs, both in original-image pixels; ``rank`` 0 is the largest face; ``chosen`` marks the
    face that is aligned and embedded for the image.

    Numbers are turned into plain floats on construction, so a numpy array can be passed as
    ``landmarks`` and the record stores as JSON.
    """

    rank: int
    box: tuple[float, float, float, float]
    landmarks: list[list[float]]
    score: float
    eye_span: float
    chosen: bool = False

    def __post_init__(self) -> None:
        box = tuple(float(v) for v in self.box)
        points = [[float(v) for v in point] for point in self.landmarks]
        if int(self.rank) < 0:
            raise ValueError(f"a face rank is 0 (largest) or more, got {self.rank}")
        if len(box) != 4:
            raise ValueError(f"a face box is (left, top, right, bottom), got {self.box!r}")
        if len(points) != 5 or any(len(p) != 2 for p in points):
            raise ValueError(f"a face has 5 [x, y] landmarks, got {self.landmarks!r}")
        numbers = [*box, *(v for p in points for v in p), float(self.score), float(self.eye_span)]
        if not all(math.isfinite(v) for v in numbers):
            raise ValueError(f"a face's box, landmarks, score and eye span must be finite: {self}")
        object.__setattr__(self, "rank", int(self.rank))
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "landmarks", points)
        object.__setattr__(self, "score", float(self.score))
        object.__setattr__(self, "eye_span", float(self.eye_span))
        object.__setattr__(self, "chosen", bool(self.chosen))


@dataclass(frozen=True)
class Detection:
    """What one detector version made of one image; ``faces`` by rank, ``detail`` says why for
    an ``error`` (or anything else worth keeping)."""

    face_image_id: int
    outcome: str
    faces: list[StoredFace]
    detail: str | None = None

    @property
    def chosen(self) -> StoredFace | None:
        """The face enrolled for the image, if any."""
        return next((f for f in self.faces if f.chosen), None)


def _to_detect(
    detector: str, detector_version: str, *, after_id: int | None = None
) -> Select[int, str, str | None]:
    """Accepted images with no detection by this detector version, by id (``after_id``: only
    larger ids): a correlated ``NOT EXISTS`` (an anti-join; PostgreSQL cannot make one of
    ``NOT IN (SELECT ...)``). The subquery repeats the ``> after_id`` bound of a keyset page
    (redundant), else a merge anti-join reads every detection below it again for each page."""
    seen = select(FaceDetection.id).where(
        FaceDetection.face_image_id == FaceImage.id,
        FaceDetection.detector == detector,
        FaceDetection.detector_version == detector_version,
    )
    stmt = select(FaceImage.id, FaceImage.source_uri, FaceImage.sha256)
    if after_id is not None:
        seen = seen.where(FaceDetection.face_image_id > after_id)
        stmt = stmt.where(FaceImage.id > after_id)
    return stmt.where(FaceImage.status == "accepted", ~seen.exists()).order_by(FaceImage.id)


def images_to_detect(
    *,
    session: Session,
    detector: str,
    detector_version: str,
    after_id: int | None = None,
    limit: int | None = None,
) -> list[tuple[int, str, str | None]]:
    """(face_image_id, source_uri, sha256) of accepted images this detector version has not seen,
    by id; ``after_id`` and ``limit``: one keyset page (the first ``limit`` with a larger id).

    Every accepted image, not only the live gallery (identity set, no conflict): what a detector
    finds depends on the bytes alone, so an image whose conflict is resolved later needs no
    second pass.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"a page holds at least 1 row, got limit={limit}")
    stmt = _to_detect(detector, detector_version, after_id=after_id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [(int(i), str(u), None if h is None else str(h)) for i, u, h in session.execute(stmt)]


def count_images_to_detect(
    *, session: Session, detector: str, detector_version: str
) -> tuple[int, int | None]:
    """How many images :func:`images_to_detect` would list, and the largest of their ids (None
    when there is none): a run pages up to that id, so images imported meanwhile wait."""
    pending = _to_detect(detector, detector_version).order_by(None).subquery()
    row = session.execute(select(func.count(), func.max(pending.c.id))).one()
    return int(row[0] or 0), None if row[1] is None else int(row[1])


def add_detection(
    *,
    session: Session,
    face_image_id: int,
    detector: str,
    detector_version: str,
    outcome: str,
    faces: Sequence[StoredFace],
    detail: str | None = None,
) -> int:
    """Record one detection and its faces; returns the detection's id.

    A second detection of the same image by the same detector version violates the unique key
    (``IntegrityError`` at the flush): :func:`delete_detections` first to redo one.
    """
    if outcome not in DETECTION_OUTCOMES:
        raise ValueError(
            f"unknown detection outcome {outcome!r}; expected one of "
            f"{', '.join(DETECTION_OUTCOMES)}"
        )
    if sum(f.chosen for f in faces) > 1:
        raise ValueError(f"at most one face is chosen per image, got {faces!r}")
    detection = FaceDetection(
        face_image_id=face_image_id,
        detector=detector,
        detector_version=detector_version,
        outcome=outcome,
        faces=len(faces),
        detail=detail,
        detected_faces=[
            DetectedFace(
                rank=f.rank,
                box_left=f.box[0],
                box_top=f.box[1],
                box_right=f.box[2],
                box_bottom=f.box[3],
                landmarks=f.landmarks,
                score=f.score,
                eye_span=f.eye_span,
                chosen=f.chosen,
            )
            for f in faces
        ],
    )
    session.add(detection)
    session.flush()
    return int(detection.id)


def _stored(row: DetectedFace) -> StoredFace:
    return StoredFace(
        rank=row.rank,
        box=(row.box_left, row.box_top, row.box_right, row.box_bottom),
        landmarks=row.landmarks,
        score=row.score,
        eye_span=row.eye_span,
        chosen=row.chosen,
    )


def detections_of(
    *, session: Session, face_image_ids: Sequence[int], detector: str, detector_version: str
) -> dict[int, Detection]:
    """face_image_id -> its detection under this detector version; ids not yet seen are absent."""
    ids = sorted({int(i) for i in face_image_ids})
    out: dict[int, Detection] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        detections = {
            d.id: d
            for d in session.scalars(
                select(FaceDetection).where(
                    FaceDetection.detector == detector,
                    FaceDetection.detector_version == detector_version,
                    FaceDetection.face_image_id.in_(chunk),
                )
            )
        }
        faces: dict[int, list[StoredFace]] = {d: [] for d in detections}
        if detections:
            rows = session.scalars(
                select(DetectedFace)
                .where(DetectedFace.detection_id.in_(list(detections)))
                .order_by(DetectedFace.detection_id, DetectedFace.rank)
            )
            for row in rows:
                faces[row.detection_id].append(_stored(row))
        for det_id, d in detections.items():
            out[d.face_image_id] = Detection(d.face_image_id, d.outcome, faces[det_id], d.detail)
    return out


def chosen_faces(
    *,
    session: Session,
    detector: str,
    detector_version: str,
    face_image_ids: Sequence[int] | None = None,
) -> dict[int, StoredFace]:
    """face_image_id -> the face chosen for it under this detector version (the one to align
    and embed); images with no chosen face are absent. ``face_image_ids`` narrows the query."""
    stmt = (
        select(FaceDetection.face_image_id, DetectedFace)
        .join(DetectedFace, DetectedFace.detection_id == FaceDetection.id)
        .where(
            FaceDetection.detector == detector,
            FaceDetection.detector_version == detector_version,
            DetectedFace.chosen.is_(True),
        )
        .order_by(FaceDetection.face_image_id)
    )
    if face_image_ids is None:
        return {int(i): _stored(f) for i, f in session.execute(stmt)}
    ids = sorted({int(i) for i in face_image_ids})
    out: dict[int, StoredFace] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = stmt.where(FaceDetection.face_image_id.in_(ids[start : start + _CHUNK]))
        out.update((int(i), _stored(f)) for i, f in session.execute(chunk))
    return out


def delete_detections(
    *, session: Session, detector: str, detector_version: str | None = None
) -> int:
    """Forget this detector's detections (of one version, or of all when None), so that every
    image is detected again; returns how many detections were deleted."""
    where = [FaceDetection.detector == detector]
    if detector_version is not None:
        where.append(FaceDetection.detector_version == detector_version)
    # The faces go explicitly too, not only by ON DELETE CASCADE: a SQLite connection made
    # without storage.db.make_engine has foreign keys off and would keep them as orphans.
    session.execute(
        delete(DetectedFace).where(
            DetectedFace.detection_id.in_(select(FaceDetection.id).where(*where))
        )
    )
    result = session.execute(delete(FaceDetection).where(*where))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
