"""The ``detect`` flow: find the faces of the gallery photos the current detector has not seen.

``siamid gallery import --dask ...`` runs it: chunks of photos are tasks, on a Dask task runner
(:func:`pipelines.cluster.flow_on`) spread over the cluster's workers, in-process otherwise.
The photos to detect are counted first and read a chunk at a time (keyset pages), never listed
whole.
A chunk skips the photos a detection already exists for, so one that is run again (its worker
died, or a retry) stores nothing twice. One run at a time per database (the ``detect`` lock).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from pipelines.cluster import Completed, failure_report, on_dask, submit_all
from pipelines.services import detection, detection_chunks, indexing
from pipelines.services.detection_chunks import DetectedChunk
from pipelines.services.encoding import FileItem
from pipelines.services.errors import worth_retrying
from pipelines.services.paging import WorkPlan
from pipelines.services.runtime import process_runtime
from pipelines.services.worker import RunTarget, worker_runtime

logger = logging.getLogger(__name__)


class DetectSummary(BaseModel):
    detected: int
    outcomes: dict[str, int]
    faces: dict[str, object]  # DetectionSummary.as_dict(): what `gallery import --json` shows
    failed_chunks: list[dict[str, object]] = []


@task(cache_policy=NO_CACHE)
def count_undetected() -> WorkPlan:
    """How many photos to detect, and the largest id among them: a count, no list."""
    return detection.plan_detection(process_runtime())


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=worth_retrying, cache_policy=NO_CACHE)
def detect_chunk(items: list[FileItem], multiple: str, target: RunTarget) -> DetectedChunk:
    return detection_chunks.detect_chunk(worker_runtime(target), items, multiple=multiple)


@task(cache_policy=NO_CACHE)
def summarise(done: list[DetectedChunk], failed_chunks: list[dict[str, object]]) -> DetectSummary:
    summary = detection_chunks.detection_summary(done)
    return DetectSummary(
        detected=summary.detected,
        outcomes=dict(Counter(summary.outcomes)),
        faces=summary.as_dict(),
        failed_chunks=failed_chunks,
    )


@flow(name="detect")
def detect_flow(
    multiple: str = "largest",
    chunk_size: int = detection_chunks.DEFAULT_CHUNK,
    wait_seconds: float = 0.0,
) -> DetectSummary:
    """Detect and store the faces of every accepted photo the current detector has not seen."""
    rt = process_runtime()
    with indexing.index_lock(rt, wait_seconds=wait_seconds):
        plan = count_undetected()
        batches = detection.undetected_chunks(rt, plan, chunk_size)
        planned = plan.chunk_count(chunk_size)
        target = RunTarget.of(rt.settings)
        done, failures = list[DetectedChunk](), list[Completed[DetectedChunk]]()
        sizes: list[int] = []  # by chunk number, for the failure report
        if on_dask():

            def arguments() -> Iterator[dict[str, object]]:
                for b in batches:  # the next page is read when the window has room for it
                    sizes.append(len(b))
                    yield {"items": b, "multiple": multiple, "target": target}

            for c in submit_all(detect_chunk, arguments()):
                total = max(planned, len(sizes))
                if c.result is None:
                    failures.append(Completed(c.n, None, c.error))
                    logger.error("chunk %d/%d failed: %s", c.n, total, c.error)
                else:
                    done.append(c.result)
                    logger.info("detected chunk %d/%d", c.n, total)
        else:
            for b in batches:
                sizes.append(len(b))
                done.append(detect_chunk(b, multiple, target))
        return summarise(done, failure_report(failures, sizes))
