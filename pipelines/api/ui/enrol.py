"""Enrolling photos through the console and following the indexing job to its end."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from pipelines.api import gallery as api_gallery
from pipelines.api.deps import State
from pipelines.api.errors import message_of
from pipelines.api.limits import read_upload_async
from pipelines.api.state import ApiState
from pipelines.api.ui import enrolments, web
from pipelines.api.ui import gallery as ui_gallery
from pipelines.services.errors import user_errors

router = web.page_router()


@router.get("/enrol")
def enrol_page(
    request: Request, v: web.SignedIn, name: Annotated[str, Query(max_length=512)] = ""
) -> HTMLResponse:
    return web.render(request, "enrol.html.j2", v, name=name, error=None)


@router.post("/enrol")
async def enrol(request: Request, state: State, v: web.SignedIn) -> Response:
    limit = state.settings.max_files
    form = await web.checked_form(request, v, write=True, max_files=limit + 1)
    name = str(form.get("name") or "").strip()
    files = [f for f in form.getlist("images") if isinstance(f, UploadFile) and f.filename]
    error = None
    if not name or len(name) > 512 or any(ord(c) < 32 or ord(c) == 127 for c in name):
        error = "give the person's name (up to 512 characters, no control characters)"
    elif not files:
        error = "choose at least one photo"
    elif len(files) > limit:
        error = f"at most {limit} photos at once (SIAMID_API_MAX_FILES)"
    if error is not None:
        return web.render(request, "enrol.html.j2", v, 422, name=name, error=error)
    uploads = []
    try:
        for i, f in enumerate(files):
            label = (f.filename or f"photo {i + 1}")[:200]
            data = await read_upload_async(
                web.upload_file(f), state.settings.max_upload_bytes, label
            )
            uploads.append(api_gallery.Upload(label, data))
        record = await run_in_threadpool(enrolments.enrol, state.rt, state.jobs, name, uploads)
    except user_errors() as exc:
        return web.render(request, "enrol.html.j2", v, 422, name=name, error=message_of(exc))
    except HTTPException as exc:  # a file over the size limit
        return web.render(request, "enrol.html.j2", v, exc.status_code, name=name, error=exc.detail)
    return web.redirect(f"/ui/enrolments/{record.id}")


def _enrolment_status(state: ApiState, record: enrolments.EnrolmentRecord) -> dict[str, Any]:
    from storage.images import find_by_sha256

    job = state.jobs.get(record.job_id) if record.job_id else None
    ident = web.served(state)
    with state.rt.sessions() as s:
        ids = {}
        for p in record.photos:
            row = find_by_sha256(session=s, sha256=p.sha256)
            if row is not None:
                ids[p.sha256] = row.id
    views = ui_gallery.photo_views(state.rt, list(ids.values()), ident.model if ident else None)
    finished = job is None or job.status in ("done", "failed")
    photos = []
    for p in record.photos:
        view = views.get(ids.get(p.sha256, -1))
        detail: str | None
        if p.before == "conflict":
            outcome, detail = "conflict", f"already enrolled for {p.other}; not added"
        elif view is None:
            outcome, detail = "removed", "the photo is no longer in the gallery"
        else:
            outcome, detail = view.outcome, view.detail
            if outcome == "waiting" and finished:
                outcome, detail = "not embedded", job.error if job and job.error else view.detail
            if p.before == "duplicate":
                detail = "already enrolled" + (f"; {outcome}" if outcome else "")
                outcome = "duplicate"
        photos.append({**asdict(p), "outcome": outcome, "detail": detail})
    return {
        "name": record.name,
        "job": None if job is None else web.job_dict(job),
        "finished": finished,
        "photos": photos,
    }


@router.get("/enrolments/{record_id}")
def enrolment_page(request: Request, state: State, v: web.SignedIn, record_id: str) -> HTMLResponse:
    record = enrolments.load(state.rt, record_id)
    if record is None:
        return web.problem(request, v, 404, "no such enrolment")
    return web.render(
        request, "enrolment.html.j2", v, record=record, status=_enrolment_status(state, record)
    )


@router.get("/enrolments/{record_id}/status")
def enrolment_status(state: State, v: web.SignedIn, record_id: str) -> JSONResponse:
    record = enrolments.load(state.rt, record_id)
    if record is None:
        return JSONResponse({"detail": "no such enrolment"}, 404)
    return JSONResponse(_enrolment_status(state, record), headers=web.SECURITY_HEADERS)


@router.get("/jobs/{job_id}")
def job_page(request: Request, state: State, v: web.SignedIn, job_id: str) -> HTMLResponse:
    try:
        job = state.jobs.get(job_id)
    except user_errors() as exc:
        return web.problem(request, v, 404, message_of(exc))
    return web.render(request, "job.html.j2", v, job=web.job_dict(job))


@router.get("/jobs/{job_id}/status")
def job_status(state: State, v: web.SignedIn, job_id: str) -> JSONResponse:
    try:
        return JSONResponse(web.job_dict(state.jobs.get(job_id)), headers=web.SECURITY_HEADERS)
    except user_errors() as exc:
        return JSONResponse({"detail": message_of(exc)}, 404)
