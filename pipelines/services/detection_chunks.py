"""Gallery detection in chunks: the one loop, in this process (:func:`detect_gallery`) or one
task per chunk (the ``detect`` flow, on a Dask cluster).

A chunk first drops the images a detection already exists for (a retry after a worker died
skips what the first try committed), then stores its detections in one transaction; the unique
(image, detector version) key forbids a second row. What a run reports counts the photos it
detected, not every detection stored before it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pipelines.services.detection import (
    DetectionSummary,
    PhotoFaces,
    current_detections,
    detect_files,
    detector,
    plan_detection,
    store_detection,
    undetected_chunks,
)
from pipelines.services.encoding import FileItem
from pipelines.services.runtime import Runtime

DEFAULT_CHUNK = 256  # photos per task: ~15 s at 61 ms a photo on one core


Progress = Callable[[int, int], None]


@dataclass
class DetectedChunk:
    detected: int
    seconds: list[float] = field(default_factory=list)  # per photo
    outcomes: Counter[str] = field(default_factory=Counter)  # of the photos detected here


def detect_chunk(
    rt: Runtime,
    items: Sequence[FileItem],
    *,
    multiple: str = "largest",
    progress: Callable[[int], None] | None = None,
) -> DetectedChunk:
    """Detect the faces of the items not yet detected and store them in one transaction;
    ``progress(n)`` after each photo."""
    done = current_detections(rt, [it[0] for it in items])
    out = DetectedChunk(0)
    todo = [(image_id, source) for image_id, source, _sha in items if image_id not in done]
    found: list[tuple[int, PhotoFaces]] = []
    detected = detect_files([src for _, src in todo], rt.limits, multiple, seconds=out.seconds)
    for (image_id, _source), faces in zip(todo, detected, strict=True):
        out.outcomes[faces.outcome] += 1
        found.append((image_id, faces))
        if progress is not None:
            progress(len(found))
    with rt.sessions.begin() as s:
        for image_id, faces in found:
            store_detection(s, image_id, faces)
    out.detected = len(found)
    return out


def detection_summary(chunks: Sequence[DetectedChunk]) -> DetectionSummary:
    """What the chunks detected: photos, their outcomes, the time per photo."""
    det = detector()
    summary = DetectionSummary(det.name, det.version)
    for c in chunks:
        summary.detected += c.detected
        summary.seconds.extend(c.seconds)
        summary.outcomes.update(c.outcomes)
    return summary


def detect_gallery(
    rt: Runtime,
    *,
    multiple: str = "largest",
    progress: Progress | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> DetectionSummary:
    """Detect faces in every accepted image the current detector has not seen, chunk after
    chunk in this process, and store them (callers hold the indexing lock:
    :mod:`pipelines.services.indexing`)."""
    plan = plan_detection(rt)
    done: list[DetectedChunk] = []
    before = 0
    # a page at a time (keyset, by id), not the whole gallery in memory
    for items in undetected_chunks(rt, plan, chunk_size):

        def tick(n: int, before: int = before) -> None:
            if progress is not None:
                progress(before + n, max(plan.todo, before + n))

        done.append(detect_chunk(rt, items, multiple=multiple, progress=tick))
        before += len(items)
    return detection_summary(done)
