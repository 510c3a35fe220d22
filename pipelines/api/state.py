"""What one API process holds for as long as it runs, shared by every request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

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

    _executor: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)

    def executor(self) -> ThreadPoolExecutor:
        """``compute_slots`` threads, each with faiss' and torch's thread counts pinned once;
        made at the first compute after start or :meth:`stop_compute`."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.settings.compute_slots,
                thread_name_prefix="siamid-compute",
                initializer=pin_threads,
                initargs=(self.settings.search_threads, self.rt.settings.torch_threads),
            )
        return self._executor

    def stop_compute(self) -> None:
        """Let the compute threads go (the work queued behind the running one is dropped)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    async def compute(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on a compute thread, at most ``compute_slots`` at a time.

        Embedding and searching are CPU work: running more of them at once than there are
        cores only adds thread switches and GIL hand-offs, and every request gets slower.
        Requests beyond the slots wait in the executor's queue, in order, holding no thread.
        A plain executor, not anyio's worker threads: those cost a backend look-up, a cancel
        scope and a limiter per call on the event loop (~4% of the loop's time per search).
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor(), lambda: fn(*args, **kwargs))

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
