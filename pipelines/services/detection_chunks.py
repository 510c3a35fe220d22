"""Gallery detection in chunks, one task each, for the ``detect`` flow on a Dask cluster.

The same work as :func:`pipelines.services.detection.detect_gallery`, split so that chunks can
run anywhere and again: a chunk first drops the images a detection already exists for (a retry
after a worker died skips what the first try committed), then stores its detections in one
transaction; the unique (image, detector version) key forbids a second row.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipelines.services.detection import (
    DetectionSummary,
    PhotoFaces,
    detect_file,
    detector,
    store_detection,
)
from pipelines.services.encoding import FileItem
from pipelines.services.runtime import Runtime

DEFAULT_CHUNK = 256  # photos per task: ~15 s at 61 ms a photo on one core


@dataclass
class DetectedChunk:
    detected: int
    seconds: list[float] = field(default_factory=list)  # per photo


def detect_chunk(
    rt: Runtime, items: Sequence[FileItem], *, multiple: str = "largest"
) -> DetectedChunk:
    """Detect the faces of the items not yet detected and store them in one transaction."""
    from storage.faces import detections_of

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
        found.append((image_id, detect_file(source, rt.limits, multiple)))
        out.seconds.append(time.perf_counter() - t0)
    with rt.sessions.begin() as s:
        for image_id, faces in found:
            store_detection(s, image_id, faces)
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
