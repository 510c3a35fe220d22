"""What one API process holds for as long as it runs, shared by every request."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pipelines.api.jobs import JobRunner
from pipelines.api.live import LiveIdentifier, NotReadyError
from pipelines.api.metrics import ApiMetrics
from pipelines.api.settings import ApiSettings
from pipelines.runtime import Runtime, safe_url
from pipelines.services.identification import Identifier


@dataclass
class ApiState:
    rt: Runtime
    settings: ApiSettings
    live: LiveIdentifier
    jobs: JobRunner
    metrics: ApiMetrics

    @cached_property
    def lookups(self) -> sessionmaker[Session]:
        """Read-only sessions for the per-request key check: autocommit, one round trip."""
        return sessionmaker(self.rt.engine.execution_options(isolation_level="AUTOCOMMIT"))

    def readiness(self) -> Identifier:
        """The identifier in service when an index is loaded and SQL answers; else
        :class:`NotReadyError` with the reason."""
        ident = self.live.current()
        try:
            with self.lookups() as s:
                s.execute(text("SELECT 1"))
        except Exception as exc:  # any driver error means the same thing here
            raise NotReadyError(
                f"the database {safe_url(self.rt.settings.db_url)} does not answer "
                f"({type(exc).__name__})"
            ) from None
        return ident
