"""Background jobs of the HTTP API (``api_job``): queued, running, done or failed. Never commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ApiJob, utcnow


def add_job(
    *, session: Session, job_id: str, kind: str, identity: str | None, owner: str
) -> ApiJob:
    row = ApiJob(id=job_id, kind=kind, status="queued", identity=identity, owner=owner)
    session.add(row)
    session.flush()
    return row


def get_job(*, session: Session, job_id: str) -> ApiJob | None:
    return session.get(ApiJob, job_id)


def start_job(*, session: Session, job_id: str) -> ApiJob:
    row = session.get_one(ApiJob, job_id)
    row.status = "running"
    row.started_at = utcnow()
    session.flush()
    return row


def finish_job(
    *,
    session: Session,
    job_id: str,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> ApiJob:
    """``done`` with its result, or ``failed`` with the error when one is given."""
    row = session.get_one(ApiJob, job_id)
    row.status = "failed" if error is not None else "done"
    row.result = result
    row.error = error
    row.finished_at = utcnow()
    session.flush()
    return row


def recent_jobs(*, session: Session, limit: int = 20) -> list[ApiJob]:
    """The newest jobs first."""
    return list(
        session.scalars(select(ApiJob).order_by(ApiJob.created_at.desc(), ApiJob.id).limit(limit))
    )
