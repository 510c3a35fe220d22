"""The ``embed`` flow: embed what lacks a vector, drop what was removed, publish an index.

Chunks of images are tasks (a retry redoes one chunk); the index is built and published once,
by the last task. The flow counts the pending images first and reads them a chunk at a time
(keyset pages, :func:`pipelines.services.embedding.pending_chunks`) as chunks are run or
submitted: a gallery of any size is never listed in memory at once. See
:mod:`pipelines.services.embedding` for what makes a re-run after a crash finish the job with
no duplicate and no missing vector. One run at a time per database: the
flow holds the indexing lock (:mod:`pipelines.services.indexing`) from start to end.

In-process (the default) the chunks run one after the other. On a Dask task runner
(:func:`pipelines.cluster.flow_on`) they are submitted to the cluster's workers and gathered
as they complete; a chunk whose worker died is run again elsewhere, a chunk that fails after
its retries is reported (``failed_chunks``) and its images stay pending for the next run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from pipelines.cluster import Completed, failure_report, on_dask, submit_all
from pipelines.services import embedding, indexing
from pipelines.services.detection import DetectionSummary
from pipelines.services.embedding import ChunkResult, FailedImage
from pipelines.services.encoding import DEFAULT_BATCH_SIZE, FileItem
from pipelines.services.errors import worth_retrying
from pipelines.services.indexing import IndexRun
from pipelines.services.models import ModelRef
from pipelines.services.publishing import RETIRED_GRACE, Collected, IndexResult
from pipelines.services.runtime import process_runtime
from pipelines.services.stopping import StopOnSigterm
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
    #: photos with several faces whose face was chosen again, and how many changed face
    rechosen: dict[str, int] = {}

    @classmethod
    def of(cls, run: IndexRun) -> EmbedSummary:
        index = run.index
        return cls(
            model_version=run.model.name,
            model_version_id=run.model.id,
            embedded=run.embedded,
            skipped=run.skipped,
            failed=len(run.failed),
            failed_images=[f.as_dict() for f in run.failed],
            removed=index.removed,
            added=index.added,
            vectors=index.vectors,
            index_version=index.index_version_id,
            factory=index.factory,
            published=index.published,
            rebuilt=index.rebuilt,
            collected=asdict(run.collected),
            failed_chunks=run.failed_chunks,
            embed_seconds=run.embed_seconds,
            rechosen=asdict(run.revisited),
        )


@task(cache_policy=NO_CACHE)
def prepare(model: str | None, full: bool, faces: str | None = None) -> ModelRef:
    return indexing.prepare(process_runtime(), model, full=full, faces=faces)


@task(cache_policy=NO_CACHE)
def detect_faces(model: ModelRef) -> DetectionSummary | None:
    return indexing.detect_new_faces(process_runtime(), model)


@task(cache_policy=NO_CACHE)
def count_pending(model: ModelRef) -> embedding.PendingPlan:
    """How many images to embed (and the largest id among them), how many are done: no list."""
    return embedding.plan_pending(process_runtime(), model)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=worth_retrying, cache_policy=NO_CACHE)
def embed_chunk(
    model: ModelRef, items: list[FileItem], batch_size: int, workers: int, target: RunTarget
) -> ChunkResult:
    """One chunk: a retry skips what an earlier try committed (its rows commit together)."""
    rt = worker_runtime(target)
    todo = embedding.still_pending(rt, model, items)
    return embedding.embed_chunk(rt, model, todo, batch_size=batch_size, workers=workers)


@task(cache_policy=NO_CACHE)
def revisit_faces(model: ModelRef, batch_size: int, workers: int) -> embedding.Revisited:
    return embedding.revisit_face_choices(
        process_runtime(), model, batch_size=batch_size, workers=workers
    )


@task(cache_policy=NO_CACHE)
def publish_index(
    model: ModelRef, factory: str | None, full: bool, grace_seconds: float
) -> tuple[IndexResult, Collected]:
    return indexing.publish_and_collect(
        process_runtime(), model, factory=factory, full=full, grace=timedelta(seconds=grace_seconds)
    )


@flow(name="embed")
def embed_flow(
    model: str | None = None,
    factory: str | None = None,
    full: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 1,
    chunk_size: int = embedding.DEFAULT_CHUNK,
    grace_seconds: float = RETIRED_GRACE.total_seconds(),
    faces: str | None = None,
    wait_seconds: float = 0.0,
) -> EmbedSummary:
    """The steps of :mod:`pipelines.services.indexing` as tasks, under its lock; the chunks
    are tasks of their own (on Dask when the runner is one).

    ``wait_seconds``: how long to wait for another indexing run of the same database to finish.
    """
    rt = process_runtime()
    with indexing.index_lock(rt, wait_seconds=wait_seconds):
        ref = prepare(model, full, faces)
        detected = detect_faces(ref)
        pending = count_pending(ref)
        batches = embedding.pending_chunks(rt, ref, pending, chunk_size)
        of = Planned(pending.chunk_count(chunk_size), pending.todo)
        target = RunTarget.of(rt.settings)
        t0 = time.perf_counter()
        if on_dask():
            run = _embed_on_cluster(ref, batches, of, batch_size, workers, target)
        else:
            run = _embed_in_process(ref, batches, of, batch_size, workers, target)
        revisited = revisit_faces(ref, batch_size, workers)
        seconds = time.perf_counter() - t0
        index, collected = publish_index(ref, factory, full, grace_seconds)
    return EmbedSummary.of(
        IndexRun(
            ref,
            run.embedded,
            pending.already_embedded,
            run.failed,
            index,
            collected,
            detected=detected,
            embed_seconds=seconds,
            failed_chunks=run.failed_chunks,
            revisited=revisited,
        )
    )


@dataclass
class ChunksDone:
    embedded: int
    failed: list[FailedImage]
    failed_chunks: list[dict[str, object]] = field(default_factory=list)


@dataclass(frozen=True)
class Planned:
    """What the count said at the start, for progress logs (chunks are read as they run)."""

    chunks: int
    images: int


def _embed_in_process(
    ref: ModelRef,
    batches: Iterable[list[FileItem]],
    of: Planned,
    batch_size: int,
    workers: int,
    target: RunTarget,
) -> ChunksDone:
    """The chunks one after the other in this process (a chunk that fails fails the run);
    SIGTERM stops the run between two chunks (:mod:`pipelines.services.stopping`)."""
    embedded, failed = 0, list[FailedImage]()
    with StopOnSigterm("run `siamid embed` again") as stop:
        for n, items in enumerate(batches, start=1):
            stop.check(f"chunk {n - 1}/{max(of.chunks, n)} ({embedded} images embedded)")
            result = embed_chunk(ref, items, batch_size, workers, target)
            embedded += result.embedded
            failed.extend(result.failed)
            logger.info(
                "embedded chunk %d/%d: %d/%d images (%.0f img/s)",
                n,
                max(of.chunks, n),
                embedded,
                of.images,
                result.embedded / max(result.seconds, 1e-9),
            )
    return ChunksDone(embedded, failed)


def _embed_on_cluster(
    ref: ModelRef,
    batches: Iterable[list[FileItem]],
    of: Planned,
    batch_size: int,
    workers: int,
    target: RunTarget,
) -> ChunksDone:
    """The chunks on the Dask workers, gathered as they complete.

    What was embedded is counted from SQL as each chunk completes (its task is then over, its
    rows committed or not for good): a chunk run twice (its worker died after committing)
    reports nothing the second time, and its first report may have died with it.
    """
    rt = process_runtime()
    sizes: list[int] = []  # by chunk number, for the failure report

    def arguments() -> Iterator[dict[str, object]]:
        for b in batches:  # the next page is read when the window has room for it
            sizes.append(len(b))
            yield {
                "model": ref,
                "items": b,
                "batch_size": batch_size,
                "workers": workers,
                "target": target,
            }

    embedded, failed, failures = 0, list[FailedImage](), list[Completed[ChunkResult]]()
    for done, c in enumerate(submit_all(embed_chunk, arguments()), start=1):
        items: list[FileItem] = list(c.arguments["items"])
        embedded += len(items) - len(embedding.still_pending(rt, ref, items))
        total = max(of.chunks, len(sizes))
        if c.result is None:
            failures.append(Completed(c.n, None, c.error))  # not its items: they may be many
            logger.error("chunk %d/%d failed: %s", c.n, total, c.error)
            continue
        failed.extend(c.result.failed)
        logger.info(
            "embedded chunk %d/%d (%d of %d done): %d images (%.0f img/s on its worker)",
            c.n,
            total,
            done,
            total,
            c.result.embedded,
            c.result.embedded / max(c.result.seconds, 1e-9),
        )
    return ChunksDone(embedded, failed, failure_report(failures, sizes))
