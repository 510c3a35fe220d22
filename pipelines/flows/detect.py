"""The ``detect`` flow: find the faces of the gallery photos the current detector has not seen.

``siamid gallery import --dask ...`` runs it: chunks of photos are tasks, on a Dask task runner
(:func:`pipelines.cluster.flow_on`) spread over the cluster's workers, in-process otherwise.
A chunk skips the photos a detection already exists for, so one that is run again (its worker
died, or a retry) stores nothing twice. One run at a time per database (the ``detect`` lock).
"""

from __future__ import annotations

import logging
from collections import Counter

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from pipelines.cluster import Completed, failure_report, on_dask, submit_all
from pipelines.runtime import process_runtime
from pipelines.services import detection_chunks, runlock
from pipelines.services.detection_chunks import DetectedChunk
from pipelines.services.embedding import chunks
from pipelines.services.encoding import FileItem
from pipelines.services.worker import RunTarget, worker_runtime

logger = logging.getLogger(__name__)


class DetectSummary(BaseModel):
    detected: int
    outcomes: dict[str, int]
    faces: dict[str, object]  # DetectionSummary.as_dict(): what `gallery import --json` shows
    failed_chunks: list[dict[str, object]] = []


@task(cache_policy=NO_CACHE)
def list_undetected() -> list[FileItem]:
    return detection_chunks.pending_detection(process_runtime())


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def detect_chunk(items: list[FileItem], multiple: str, target: RunTarget) -> DetectedChunk:
    return detection_chunks.detect_chunk(worker_runtime(target), items, multiple=multiple)


@task(cache_policy=NO_CACHE)
def summarise(done: list[DetectedChunk], failed_chunks: list[dict[str, object]]) -> DetectSummary:
    summary = detection_chunks.detection_summary(process_runtime(), done)
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
    with runlock.run_lock(rt, "detect", wait_seconds=wait_seconds):
        batches = chunks(list_undetected(), chunk_size)
        target = RunTarget.of(rt.settings)
        done, failures = list[DetectedChunk](), list[Completed[DetectedChunk]]()
        if on_dask():
            args = [{"items": b, "multiple": multiple, "target": target} for b in batches]
            for c in submit_all(detect_chunk, args):
                if c.result is None:
                    failures.append(c)
                    logger.error("chunk %d/%d failed: %s", c.n, len(batches), c.error)
                else:
                    done.append(c.result)
                    logger.info("detected chunk %d/%d", c.n, len(batches))
        else:
            done = [detect_chunk(b, multiple, target) for b in batches]
        return summarise(done, failure_report(failures, [len(b) for b in batches]))
