"""What one API process holds for as long as it runs, shared by every request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pipelines.api.jobs import JobRunner
from pipelines.api.live import LiveIdentifier, NotReadyError
from pipelines.api.metrics import ApiMetrics
from pipelines.api.probes import pin_threads
from pipelines.api.queries import Queries
from pipelines.api.settings import ApiSettings
from pipelines.services.apikeys import ApiKeyCache
from pipelines.services.identification import Identifier
from pipelines.services.runtime import Runtime, safe_url

T = TypeVar("T")


@dataclass
class ApiState:
    rt: Runtime
    settings: ApiSettings
    live: LiveIdentifier
    jobs: JobRunner
    metrics: ApiMetrics

    @cached_property
    def keys(self) -> ApiKeyCache:
        return ApiKeyCache(self.settings.key_cache_seconds)

    @cached_property
    def lookups(self) -> sessionmaker[Session]:
        """Read-only sessions for the per-request key check: autocommit, one round trip."""
        return sessionmaker(self.rt.engine.execution_options(isolation_level="AUTOCOMMIT"))

    @cached_property
    def queries(self) -> Queries:
        return Queries(
            self.compute,
            self.settings,
            self.rt.limits,
            on_batch=lambda kind, n: self.metrics.batched(kind, n),
        )

    @cached_property
    def limiter(self) -> anyio.CapacityLimiter:
        return anyio.CapacityLimiter(self.settings.compute_slots)

    async def compute(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on a worker thread, at most ``compute_slots`` at a time.

        Embedding and searching are CPU work: running more of them at once than there are
        cores only adds thread switches and GIL hand-offs, and every request gets slower.
        Requests beyond the slots wait on the event loop, in order, holding no thread.
        """

        def run() -> T:
            pin_threads(self.settings.search_threads, self.rt.settings.torch_threads)
            return fn(*args, **kwargs)

        return await anyio.to_thread.run_sync(run, limiter=self.limiter)

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
