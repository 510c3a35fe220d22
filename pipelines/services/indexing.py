"""Index what is pending: the one sequence every caller runs, under the one run lock.

The steps, in order: resolve and load the model (a missing or altered checkpoint fails here,
before any work); with ``full``, forget its vectors; detect the faces of photos the current
detector has not seen (models that read detected faces); embed every live image that lacks a
vector; choose again the face of photos with several whose person gained photos
(:func:`~pipelines.services.embedding.revisit_face_choices`); build and publish an index version
without the removed ones; delete the files of versions retired long enough ago.

Callers: ``siamid embed`` (the ``embed`` flow wraps each step in a task and runs the chunks as
tasks, on Dask when asked), the HTTP service's enrolment jobs, the benchmarks and the tests run
:func:`index_pending` in their process. Detection alone (``siamid gallery import``, the
``detect`` flow) takes the same lock. Whichever starts second waits for the first, or stops
with :class:`~pipelines.services.runlock.RunLockedError` naming it: two runs never list and
embed the same pending images, nor publish over each other.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from pipelines.services import embedding, publishing, runlock
from pipelines.services.detection import DetectionSummary
from pipelines.services.detection_chunks import detect_gallery
from pipelines.services.embedding import FailedImage
from pipelines.services.encoding import DEFAULT_BATCH_SIZE
from pipelines.services.models import ModelRef, resolve_model
from pipelines.services.publishing import RETIRED_GRACE, Collected, IndexResult
from pipelines.services.runtime import Runtime

#: The run lock every indexing step holds (:data:`pipelines.services.runlock.LOCKS`).
INDEX_LOCK = "index"


@dataclass
class IndexRun:
    """What one run did: faces detected, images embedded (``skipped``: already had a vector),
    images that failed and why, the index version published, the files collected."""

    model: ModelRef
    embedded: int
    skipped: int
    failed: list[FailedImage]
    index: IndexResult
    collected: Collected
    detected: DetectionSummary | None = None
    embed_seconds: float = 0.0
    failed_chunks: list[dict[str, object]] = field(default_factory=list)
    revisited: embedding.Revisited = field(default_factory=embedding.Revisited)


@contextlib.contextmanager
def index_lock(rt: Runtime, *, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the one indexing lock of ``rt``'s database (waiting up to ``wait_seconds``)."""
    with runlock.run_lock(rt, INDEX_LOCK, wait_seconds=wait_seconds):
        yield


def prepare(
    rt: Runtime, model: str | None, *, full: bool = False, faces: str | None = None
) -> ModelRef:
    """The model (name or id; default the newest), loaded once; ``faces`` other than the
    model's crop mode is refused; with ``full`` its vectors are forgotten (all re-embedded)."""
    ref = resolve_model(rt.sessions, model)
    ref.crop.check(faces, ref.name)
    rt.encoders.get(ref)
    if full:
        embedding.forget_vectors(rt, ref)
    return ref


def detect_new_faces(
    rt: Runtime,
    model: ModelRef,
    *,
    multiple: str = "largest",
    progress: Callable[[int, int], None] | None = None,
) -> DetectionSummary | None:
    """Faces of the photos the current detector has not seen, for models that read faces."""
    if not model.crop.detect:
        return None
    return detect_gallery(rt, multiple=multiple, progress=progress)


def publish_and_collect(
    rt: Runtime,
    model: ModelRef,
    *,
    factory: str | None = None,
    full: bool = False,
    grace: timedelta = RETIRED_GRACE,
) -> tuple[IndexResult, Collected]:
    """Publish an index version of the model's live vectors (when anything changed), set the
    calibrated threshold again for the published gallery when its size changed
    (:func:`~pipelines.services.calibration.threshold_for_published`), then delete what was
    retired longer than ``grace`` ago."""
    from pipelines.services.calibration import threshold_for_published

    index = publishing.build_and_publish(rt, model, factory=factory, full=full)
    if index.published:
        threshold_for_published(rt)
    return index, publishing.collect_garbage(rt, grace)


def index_pending(
    rt: Runtime,
    model: str | None = None,
    *,
    factory: str | None = None,
    full: bool = False,
    faces: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 1,
    chunk_size: int = embedding.DEFAULT_CHUNK,
    wait_seconds: float = 0.0,
    grace: timedelta = RETIRED_GRACE,
) -> IndexRun:
    """Every step in this process, under the lock (see the module's docstring).

    ``workers``: DataLoader decode processes (0 in a threaded server: nothing is forked).
    """
    with index_lock(rt, wait_seconds=wait_seconds):
        ref = prepare(rt, model, full=full, faces=faces)
        detected = detect_new_faces(rt, ref)
        t0 = time.perf_counter()
        run = embedding.embed_pending(
            rt, ref, chunk_size=chunk_size, batch_size=batch_size, workers=workers
        )
        revisited = embedding.revisit_face_choices(rt, ref, batch_size=batch_size, workers=workers)
        seconds = time.perf_counter() - t0
        index, collected = publish_and_collect(rt, ref, factory=factory, full=full, grace=grace)
    return IndexRun(
        ref,
        run.embedded,
        run.already_embedded,
        run.failed,
        index,
        collected,
        detected=detected,
        embed_seconds=seconds,
        revisited=revisited,
    )


def detect_pending(
    rt: Runtime,
    *,
    multiple: str = "largest",
    progress: Callable[[int, int], None] | None = None,
    wait_seconds: float = 0.0,
) -> DetectionSummary:
    """Detection alone (after an import), under the same lock as indexing."""
    with index_lock(rt, wait_seconds=wait_seconds):
        return detect_gallery(rt, multiple=multiple, progress=progress)
