"""Background jobs: after an enrolment or a removal, embed what is pending and publish.

A job is a row in ``api_job`` (so any worker process can answer a poll) run by one thread of
the process that accepted the request. Indexing is :mod:`pipelines.services.indexing` in this
process with the model of the published index, so the service keeps answering with one model;
its one lock makes jobs of several workers and ``siamid embed`` take turns (two builds from the
same published version would each miss the other's images).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pipelines.services.errors import SiamidError
from pipelines.services.models import ModelRef
from pipelines.services.runtime import Runtime

logger = logging.getLogger(__name__)

#: How long a job waits for the database to record its state (start, finish) before giving up.
RECORD_PATIENCE_S = 30.0


class UnknownJobError(SiamidError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}; job ids come from enrolment and removal answers")


@dataclass(frozen=True)
class JobView:
    id: str
    kind: str
    status: str
    identity: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None
    error: str | None


def process_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_gone(owner: str) -> bool:
    """Whether the process that took the job was on this host and is no longer running."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's job: it may well be running
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


#: How long a job waits for another indexing run (``siamid embed``, another worker's job) to
#: finish before it fails saying which run holds the lock.
INDEX_WAIT_SECONDS = 3600.0


def serving_model(rt: Runtime) -> ModelRef:
    """The model of the published index; the newest model when nothing is published yet."""
    from pipelines.services.models import resolve_model
    from storage.indexes import published_index

    with rt.sessions() as s:
        row = published_index(session=s)
        ref = str(row.model_version_id) if row is not None else None
    return resolve_model(rt.sessions, ref)


def index_pending(rt: Runtime) -> dict[str, Any]:
    """Index what is pending with the served model, as ``siamid embed`` does and under the same
    lock (:func:`pipelines.services.indexing.index_pending`)."""
    from pipelines.services import indexing

    model = serving_model(rt)
    # workers=0: no DataLoader processes forked from a threaded server.
    run = indexing.index_pending(rt, str(model.id), workers=0, wait_seconds=INDEX_WAIT_SECONDS)
    return {
        "model_version": run.model.name,
        "detected": run.detected.detected if run.detected is not None else 0,
        "embedded": run.embedded,
        "failed": [{"image_id": f.face_image_id, "reason": str(f.refusal)} for f in run.failed],
        "index_version": run.index.index_version_id,
        "published": run.index.published,
        "vectors": run.index.vectors,
        "added": run.index.added,
        "removed": run.index.removed,
    }


class JobRunner:
    """Runs this process's jobs one after the other on a thread; ``after`` runs after each
    successful one (the live identifier's refresh, so this worker answers with it at once)."""

    def __init__(
        self,
        rt: Runtime,
        *,
        work: Callable[[Runtime], dict[str, Any]] = index_pending,
        after: Callable[[], object] | None = None,
    ) -> None:
        self.rt, self.work, self.after = rt, work, after
        self.owner = process_owner()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, kind: str, identity: str | None) -> JobView:
        from storage.jobs import add_job

        with self.rt.sessions.begin() as s:
            row = add_job(
                session=s, job_id=uuid.uuid4().hex, kind=kind, identity=identity, owner=self.owner
            )
            view = _view(row)
        self._queue.put(view.id)
        return view

    def get(self, job_id: str) -> JobView:
        from storage.jobs import get_job

        with self.rt.sessions() as s:
            row = get_job(session=s, job_id=job_id)
            if row is None:
                raise UnknownJobError(job_id)
            view = _view(row)
        if view.status in ("queued", "running") and _owner_gone(row.owner):
            return replace(
                view,
                status="failed",
                error="the server process that ran this job stopped; the images are imported, "
                "and the next enrolment or `siamid embed` indexes them",
            )
        return view

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="siamid-jobs", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the job in progress (queued ones stay queued), then end the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while (job_id := self._queue.get()) is not None:
            try:
                self._run(job_id)
            except Exception:  # the thread outlives one job, whatever happened to it
                logger.exception("job %s could not be run", job_id)

    def _recorded(self, write: Callable[[], None], patience_s: float = RECORD_PATIENCE_S) -> None:
        """One SQL write of the job's state; while the database does not answer (a restart),
        again every second, up to ``patience_s``: a job must not stay "running" for a blip."""
        from pipelines.services.errors import database_unavailable

        deadline = time.monotonic() + patience_s
        while True:
            try:
                write()
                return
            except Exception as exc:
                reason = database_unavailable(exc)
                if reason is None or time.monotonic() > deadline:
                    raise
                logger.warning("recording a job's state: %s; trying again", reason)
                time.sleep(1.0)

    def _run(self, job_id: str) -> None:
        from pipelines.services.errors import fault_message, user_errors
        from storage.jobs import finish_job, start_job

        def started() -> None:
            with self.rt.sessions.begin() as s:
                start_job(session=s, job_id=job_id)

        self._recorded(started)
        result: dict[str, Any] | None = None
        error: str | None = None
        try:
            result = self.work(self.rt)
        except user_errors() as exc:
            error = str(exc.args[0]) if isinstance(exc, LookupError) and exc.args else str(exc)
        except Exception as exc:
            if (error := fault_message(exc)) is not None:  # the database or the disk
                logger.error("job %s failed: %s", job_id, error)
            else:
                logger.exception("job %s failed", job_id)
                error = "internal error while indexing; the server log has the details"
        if error is None and self.after is not None:
            # Before the job reads as done: a client that polls "done" and then asks this
            # worker gets the new version (the other workers poll it within seconds).
            try:
                self.after()
            except Exception:
                logger.exception("refreshing the served index after job %s failed", job_id)

        def finished() -> None:
            with self.rt.sessions.begin() as s:
                finish_job(session=s, job_id=job_id, result=result, error=error)

        self._recorded(finished)
        logger.info("job %s %s", job_id, "done" if error is None else f"failed: {error}")


def _view(row: Any) -> JobView:
    return JobView(
        row.id,
        row.kind,
        row.status,
        row.identity,
        row.created_at,
        row.started_at,
        row.finished_at,
        row.result,
        row.error,
    )
