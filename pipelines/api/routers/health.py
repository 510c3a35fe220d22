"""Liveness, readiness and Prometheus metrics (no key: bind the server to a trusted network)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from pipelines.api.deps import State
from pipelines.api.schemas import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up and answers."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Ready,
    responses={503: {"description": "no index loaded yet, or SQL does not answer"}},
)
def readyz(state: State) -> Ready:
    """An index is loaded and SQL answers: the service can identify."""
    ident = state.readiness()
    return Ready(
        status="ready",
        index_version=ident.index_version_id,
        model_version=ident.model.name,
        embedding_dim=ident.model.dim,
        vectors=ident.index.ntotal,
        threshold=ident.threshold,
        threshold_source=ident.threshold_source,
        threshold_gallery_identities=ident.threshold_gallery,
    )


@router.get("/metrics", response_class=Response)
def metrics(state: State) -> Response:
    """Prometheus text format: requests, latency, errors, the served index version."""
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
