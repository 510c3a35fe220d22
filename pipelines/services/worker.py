"""The runtime of a task that may run in another process or on another machine (a Dask worker).

A worker opens the database, the gallery files and the vector store from its own ``SIAMID_*``
settings, like every siamid process. A worker set up for another database or home would write
vectors where the run never looks, so each task first checks that its worker serves the run's
:class:`RunTarget`, and fails with a message naming the worker and what to set otherwise. The
run's face detector travels with it: a worker started with another ``SIAMID_DETECTOR`` detects
with the run's.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

from pipelines.services.errors import DatabaseError, SiamidError
from pipelines.services.runtime import Runtime, process_runtime, safe_url
from pipelines.settings import Settings

logger = logging.getLogger(__name__)


class WorkerSetupError(SiamidError):
    """This worker cannot serve the run: another database or home, or no database at all."""


@dataclass(frozen=True)
class RunTarget:
    """What a run writes to: its database (password hidden) and its ``SIAMID_HOME``; and the
    face detector it detects with (``SIAMID_DETECTOR`` / ``--detector`` where it started)."""

    database: str
    home: str
    detector: str = ""

    @classmethod
    def of(cls, settings: Settings) -> RunTarget:
        from pipelines.services.detection import detection_method

        return cls(safe_url(settings.db_url), str(settings.home_dir), detection_method())


def this_worker() -> str:
    return f"worker pid {os.getpid()} on {socket.gethostname()}"


def worker_runtime(target: RunTarget) -> Runtime:
    """This process's runtime, checked to serve ``target`` and to reach its database."""
    rt = process_runtime()
    mine = RunTarget.of(rt.settings)
    if mine.home != target.home:
        raise WorkerSetupError(
            f"{this_worker()} uses SIAMID_HOME {mine.home}, the run uses {target.home}: "
            "start the worker with the run's SIAMID_HOME (shared storage, same path)"
        )
    if mine.database != target.database:
        raise WorkerSetupError(
            f"{this_worker()} uses the database {mine.database}, the run uses "
            f"{target.database}: start the worker with the run's SIAMID_DATABASE_URL"
        )
    try:
        _ = rt.engine
    except DatabaseError as exc:
        raise WorkerSetupError(f"{this_worker()}: {exc}") from None
    from pipelines.services.detection import detection_method

    if target.detector and detection_method() != target.detector:
        logger.info(
            "%s detects with the run's detector %s (its own SIAMID_DETECTOR: %s)",
            this_worker(),
            target.detector,
            detection_method(),
        )
        os.environ["SIAMID_DETECTOR"] = target.detector
    return rt
