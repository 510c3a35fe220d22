"""Gallery detection in chunks, one task each, for the ``detect`` flow on a Dask cluster.

The same work as :func:`pipelines.services.detection.detect_gallery`, split so that chunks can
run anywhere and again: a chunk first drops the images a detection already exists for (a retry
after a worker died skips what the first try committed), then stores its detections in one
transaction; the unique (image, detector version) key forbids a second row.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from pipelines.runtime import Runtime
from pipelines.services.detection import (
    DetectionSummary,
    PhotoFaces,
    detect_photo,
    detector,
    read_photo,
    stored_faces,
)
from pipelines.services.encoding import FileItem
from pipelines.services.paging import WorkPlan, keyset_pages
from siamese.images import ImageRejected

DEFAULT_CHUNK = 256  # photos per task: ~15 s at 61 ms a photo on one core


@dataclass
class DetectedChunk:
    detected: int
    seconds: list[float] = field(default_factory=list)  # per photo


def pending_detection(rt: Runtime) -> list[FileItem]:
    """Accepted images the current detector version has not seen, by id (the whole list: the
    flow counts with :func:`plan_detection` and reads with :func:`undetected_chunks`)."""
    from storage.faces import images_to_detect

    det = detector()
    with rt.sessions() as s:
        return images_to_detect(session=s, detector=det.name, detector_version=det.version)


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
    one before has been taken (the chunks of :func:`pending_detection`'s list)."""
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


def detect_chunk(
    rt: Runtime, items: Sequence[FileItem], *, multiple: str = "largest"
) -> DetectedChunk:
    """Detect the faces of the items not yet detected and store them in one transaction."""
    from storage.faces import add_detection, detections_of

    det = detector()
    with rt.sessions() as s:
        done = detections_of(
            session=s,
            face_image_ids=[it[0] for it in items],
            detector=det.name,
            detector_version=det.version,
        )
    out = DetectedChunk(0)
    found: list[tuple[int, PhotoFaces]] = []
    for image_id, source, _sha in items:
        if image_id in done:
            continue
        t0 = time.perf_counter()
        try:
            faces = detect_photo(read_photo(source, rt.limits), multiple)
        except ImageRejected as rej:
            faces = PhotoFaces("error", [], None, f"{rej.reason}: {rej.detail}")
        out.seconds.append(time.perf_counter() - t0)
        found.append((image_id, faces))
    with rt.sessions.begin() as s:
        for image_id, faces in found:
            add_detection(
                session=s,
                face_image_id=image_id,
                detector=det.name,
                detector_version=det.version,
                outcome=faces.outcome,
                faces=stored_faces(faces.faces, faces.chosen),
                detail=faces.detail,
            )
    out.detected = len(found)
    return out


def detection_summary(rt: Runtime, chunks: Sequence[DetectedChunk]) -> DetectionSummary:
    """What the chunks detected and the outcomes of every image under the current detector."""
    from storage.faces import detection_counts

    det = detector()
    summary = DetectionSummary(det.name, det.version)
    for c in chunks:
        summary.detected += c.detected
        summary.seconds.extend(c.seconds)
    with rt.sessions() as s:
        summary.outcomes = detection_counts(
            session=s, detector=det.name, detector_version=det.version
        )
    return summary
