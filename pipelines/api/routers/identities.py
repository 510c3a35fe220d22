"""The gallery: list and show identities (read), enrol photos and remove people (write)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, HTTPException, Query, Response, UploadFile

from pipelines.api import gallery
from pipelines.api.deps import IdentityName, State, require_read, require_write
from pipelines.api.limits import read_upload
from pipelines.api.schemas import MAX_PAGE, Enrolment, Identity, IdentityPage, Job, Removal
from pipelines.services.identities import identity_view

router = APIRouter(prefix="/v1/identities", tags=["gallery"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no identity of that name"}}


@router.get("", response_model=IdentityPage, dependencies=[Depends(require_read)])
def list_identities(
    state: State,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> IdentityPage:
    """Identities by name, a page at a time, with their accepted and rejected image counts."""
    return IdentityPage.model_validate(gallery.identity_page(state.rt, offset=offset, limit=limit))


@router.get(
    "/{name}", response_model=Identity, responses=NOT_FOUND, dependencies=[Depends(require_read)]
)
def get_identity(state: State, name: IdentityName) -> Identity:
    """One identity and its images (status, size, digest; never a server path)."""
    return Identity.model_validate(identity_view(state.rt, name))


@router.post(
    "/{name}/images",
    response_model=Enrolment,
    status_code=202,
    responses={
        200: {"description": "nothing new to index (every photo was already enrolled)"},
        413: {"description": "a file or the request is larger than the limit"},
        422: {"description": "a file is not a usable image: nothing was enrolled"},
    },
    dependencies=[Depends(require_write)],
)
def enrol(
    state: State,
    name: IdentityName,
    images: Annotated[list[UploadFile], File(description="one or more photos of the person")],
    response: Response,
) -> Enrolment:
    """Enrol photos under NAME (created if new): all of them or none, then index them in the
    background: poll the job until `done`; from then on identification can answer NAME."""
    limit = state.settings.max_files
    if len(images) > limit:
        raise HTTPException(413, f"at most {limit} images per request (SIAMID_API_MAX_FILES)")
    labels = [(f.filename or f"image {i + 1}")[:200] for i, f in enumerate(images)]
    uploads = [
        gallery.Upload(label, read_upload(f, state.settings.max_upload_bytes, label))
        for f, label in zip(images, labels, strict=True)
    ]
    enrolled = gallery.enrol(state.rt, name, uploads)
    job = state.jobs.submit("enrol", name) if enrolled.new else None
    if job is None:
        response.status_code = 200
    else:
        response.headers["Location"] = f"/v1/jobs/{job.id}"
    return Enrolment(**asdict(enrolled), job=Job.model_validate(job) if job is not None else None)


@router.delete(
    "/{name}", response_model=Removal, responses=NOT_FOUND, dependencies=[Depends(require_write)]
)
def remove(state: State, name: IdentityName, response: Response) -> Removal:
    """Remove NAME, its images and stored photos. Identification stops answering NAME at once;
    the job publishes an index without its vectors."""
    removal = gallery.remove(state.rt, name)
    state.live.check_removals()
    job = state.jobs.submit("remove", name)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return Removal(**asdict(removal), job=Job.model_validate(job))
