"""The FastAPI application: one per process, built by :func:`create_app`.

``siamid api`` runs it under uvicorn (``pipelines.api.app:create_app`` as a factory, so every
worker process builds its own). At start-up the published index is loaded in the background
(``/healthz`` answers at once, ``/readyz`` once it is in service) and the job thread starts.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI

from index.vector_index import batch_searches_through_blas
from pipelines.api import errors
from pipelines.api.jobs import JobRunner
from pipelines.api.limits import BodyLimitMiddleware
from pipelines.api.live import LiveIdentifier
from pipelines.api.metrics import ApiMetrics, MetricsMiddleware
from pipelines.api.routers import health, identify, identities, jobs
from pipelines.api.settings import ApiSettings
from pipelines.api.state import ApiState
from pipelines.services.runtime import Runtime, open_runtime
from pipelines.settings import Settings

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Open-set face identification against the published index: **who is this, or nobody we know?**

Every `/v1` route needs an `X-API-Key` header: a key from
`siamid apikey create --scope read` (identify, search, list, show, jobs) or `--scope write`
(also enrol and remove). Errors are `{"detail": "..."}`: 4xx for what a request can fix,
503 with `Retry-After` while no index is loaded or the database does not answer, 507 when the
disk is full.
"""


def _version() -> str:
    try:
        return version("siamid")
    except PackageNotFoundError:
        return "0+unknown"


def create_app(
    settings: Settings | None = None,
    api_settings: ApiSettings | None = None,
    *,
    runtime: Runtime | None = None,
) -> FastAPI:
    """The application over ``runtime`` (default: one opened from ``settings`` / the env)."""
    api = api_settings or ApiSettings()
    rt = runtime or open_runtime(settings or Settings())
    metrics = ApiMetrics()
    live = LiveIdentifier(
        rt,
        top_k=api.top_k,
        poll_seconds=api.poll_seconds,
        on_swap=lambda ident: metrics.served(ident.index_version_id, ident.index.ntotal),
    )
    state = ApiState(rt, api, live, JobRunner(rt, after=live.refresh), metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(api.switch_interval)
        blas_threshold = batch_searches_through_blas()  # the batches of concurrent searches
        _ = rt.engine  # the schema is at head before the first request
        state.live.start()
        state.jobs.start()
        try:
            yield
        finally:
            state.jobs.stop()
            state.live.stop()
            state.stop_compute()
            sys.setswitchinterval(switch_interval)
            batch_searches_through_blas(blas_threshold)

    app = FastAPI(
        title="siamid",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.siamid = state
    for router in (health.router, identify.router, identities.router, jobs.router):
        app.include_router(router)
    errors.install(
        app, on_rejected_image=lambda reason: metrics.rejected_images.labels(reason).inc()
    )
    if api.ui:
        from pipelines.api import ui

        ui.install(app, api, rt.settings.home_dir)
    # The last added is the outermost: metrics see every answer, the 413s and 500s included.
    app.add_middleware(errors.BugMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=api.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
