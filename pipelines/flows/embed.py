"""The ``embed`` flow: embed what lacks a vector, drop what was removed, publish an index.

Chunks of images are tasks (a retry redoes one chunk); the index is built and published once,
by the last task. See :mod:`pipelines.services.embedding` for what makes a re-run after a crash
finish the job with no duplicate and no missing vector. One run at a time per database: the
flow holds the ``embed`` run lock (:mod:`pipelines.services.runlock`) from start to end.

In-process (the default) the chunks run one after the other. On a Dask task runner
(:func:`pipelines.cluster.flow_on`) they are submitted to the cluster's workers and gathered
as they complete; a chunk whose worker died is run again elsewhere, a chunk that fails after
its retries is reported (``failed_chunks``) and its images stay pending for the next run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from pipelines.cluster import Completed, failure_report, on_dask, submit_all
from pipelines.runtime import process_runtime
from pipelines.services import embedding, publishing, runlock
from pipelines.services.embedding import ChunkResult, FailedImage
from pipelines.services.encoding import DEFAULT_BATCH_SIZE, FileItem
from pipelines.services.models import ModelRef, resolve_model
from pipelines.services.publishing import Collected, IndexResult
from pipelines.services.worker import RunTarget, worker_runtime

logger = logging.getLogger(__name__)


class EmbedSummary(BaseModel):
    model_version: str
    model_version_id: int
    embedded: int
    skipped: int
    failed: int
    failed_images: list[dict[str, object]]
    removed: int
    added: int
    vectors: int
    index_version: int
    factory: str
    published: bool
    rebuilt: bool
    collected: dict[str, int]
    failed_chunks: list[dict[str, object]] = []
    embed_seconds: float = 0.0


@task(cache_policy=NO_CACHE)
def prepare(model: str | None, full: bool, faces: str | None = None) -> ModelRef:
    """Resolve and load the model (a missing or altered checkpoint, or a ``--faces`` other
    than the model's, fails here, before any work)."""
    rt = process_runtime()
    ref = resolve_model(rt.sessions, model)
    ref.crop.check(faces, ref.name)
    rt.encoders.get(ref)
    if full:
        embedding.forget_vectors(rt, ref)
    return ref


@task(cache_policy=NO_CACHE)
def detect_faces() -> dict[str, object]:
    """Faces of the images the current detector has not seen (detect-mode models)."""
    from pipelines.services.detection import detect_gallery

    return detect_gallery(process_runtime()).as_dict()


@task(cache_policy=NO_CACHE)
def list_pending(model: ModelRef) -> embedding.Pending:
    return embedding.pending_images(process_runtime(), model)


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def embed_chunk(
    model: ModelRef, items: list[FileItem], batch_size: int, workers: int, target: RunTarget
) -> ChunkResult:
    """One chunk: a retry skips what an earlier try committed (its rows commit together)."""
    rt = worker_runtime(target)
    todo = embedding.still_pending(rt, model, items)
    return embedding.embed_chunk(rt, model, todo, batch_size=batch_size, workers=workers)


@task(cache_policy=NO_CACHE)
def publish_index(model: ModelRef, factory: str | None, full: bool) -> IndexResult:
    return publishing.build_and_publish(process_runtime(), model, factory=factory, full=full)


@task(cache_policy=NO_CACHE)
def collect_garbage(grace_seconds: float) -> Collected:
    return publishing.collect_garbage(process_runtime(), timedelta(seconds=grace_seconds))


@flow(name="embed")
def embed_flow(
    model: str | None = None,
    factory: str | None = None,
    full: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 1,
    chunk_size: int = embedding.DEFAULT_CHUNK,
    grace_seconds: float = publishing.RETIRED_GRACE.total_seconds(),
    faces: str | None = None,
    wait_seconds: float = 0.0,
) -> EmbedSummary:
    """Embed what lacks a vector, drop what was removed, publish a new index version.

    ``wait_seconds``: how long to wait for another embed run of the same database to finish.
    """
    rt = process_runtime()
    with runlock.run_lock(rt, "embed", wait_seconds=wait_seconds):
        ref = prepare(model, full, faces)
        if ref.crop.detect:
            detect_faces()
        pending = list_pending(ref)
        batches = embedding.chunks(pending.todo, chunk_size)
        target = RunTarget.of(rt.settings)
        t0 = time.perf_counter()
        if on_dask():
            run = _embed_on_cluster(ref, batches, batch_size, workers, target)
        else:
            run = _embed_in_process(ref, batches, batch_size, workers, target)
        seconds = time.perf_counter() - t0
        index = publish_index(ref, factory, full)
        gc = collect_garbage(grace_seconds)
    return EmbedSummary(
        model_version=ref.name,
        model_version_id=ref.id,
        embedded=run.embedded,
        skipped=pending.already_embedded,
        failed=len(run.failed),
        failed_images=[
            {"face_image_id": f.face_image_id, "source": f.source, "reason": f.reason}
            for f in run.failed
        ],
        removed=index.removed,
        added=index.added,
        vectors=index.vectors,
        index_version=index.index_version_id,
        factory=index.factory,
        published=index.published,
        rebuilt=index.rebuilt,
        collected={"index_files": gc.index_files, "orphan_shards": gc.orphan_shards},
        failed_chunks=run.failed_chunks,
        embed_seconds=seconds,
    )


@dataclass
class ChunksDone:
    embedded: int
    failed: list[FailedImage]
    failed_chunks: list[dict[str, object]] = field(default_factory=list)


def _embed_in_process(
    ref: ModelRef,
    batches: Sequence[list[FileItem]],
    batch_size: int,
    workers: int,
    target: RunTarget,
) -> ChunksDone:
    """The chunks one after the other in this process (a chunk that fails fails the run)."""
    todo = sum(len(b) for b in batches)
    embedded, failed = 0, list[FailedImage]()
    for n, items in enumerate(batches, start=1):
        result = embed_chunk(ref, items, batch_size, workers, target)
        embedded += result.embedded
        failed.extend(result.failed)
        logger.info(
            "embedded chunk %d/%d: %d/%d images (%.0f img/s)",
            n,
            len(batches),
            embedded,
            todo,
            result.embedded / max(result.seconds, 1e-9),
        )
    return ChunksDone(embedded, failed)


def _embed_on_cluster(
    ref: ModelRef,
    batches: Sequence[list[FileItem]],
    batch_size: int,
    workers: int,
    target: RunTarget,
) -> ChunksDone:
    """The chunks on the Dask workers, gathered as they complete.

    What was embedded is counted from SQL afterwards: a chunk run twice (its worker died after
    committing) reports nothing the second time, and its first report may have died with it.
    """
    args = [
        {"model": ref, "items": b, "batch_size": batch_size, "workers": workers, "target": target}
        for b in batches
    ]
    failed, failures = list[FailedImage](), list[Completed[ChunkResult]]()
    for done, c in enumerate(submit_all(embed_chunk, args), start=1):
        if c.result is None:
            failures.append(c)
            logger.error("chunk %d/%d failed: %s", c.n, len(batches), c.error)
            continue
        failed.extend(c.result.failed)
        logger.info(
            "embedded chunk %d/%d (%d of %d done): %d images (%.0f img/s on its worker)",
            c.n,
            len(batches),
            done,
            len(batches),
            c.result.embedded,
            c.result.embedded / max(c.result.seconds, 1e-9),
        )
    submitted = {it[0] for b in batches for it in b}
    left = {it[0] for it in list_pending(ref).todo} & submitted
    sizes = [len(b) for b in batches]
    return ChunksDone(len(submitted - left), failed, failure_report(failures, sizes))
