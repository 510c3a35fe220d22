"""Polling background jobs (indexing after an enrolment or a removal)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from pipelines.api.deps import State, require_read
from pipelines.api.schemas import Job

router = APIRouter(prefix="/v1", tags=["jobs"], dependencies=[Depends(require_read)])


@router.get("/jobs/{job_id}", response_model=Job, responses={404: {"description": "no such job"}})
def get_job(state: State, job_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]) -> Job:
    """A job's status: queued, running, done (with the index version) or failed (why)."""
    return Job.model_validate(state.jobs.get(job_id))
