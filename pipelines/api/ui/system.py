"""The served model, index, threshold and calibration; jobs; API keys; reports."""

from __future__ import annotations

import mimetypes
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, Response

from pipelines.api.deps import State
from pipelines.api.errors import message_of
from pipelines.api.state import ApiState
from pipelines.api.ui import web
from pipelines.services.errors import user_errors

router = web.page_router()


def _reports(state: ApiState) -> list[str]:
    root = state.rt.settings.reports_dir
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.html") if p.is_file())


@router.get("/reports/{path:path}")
def report_file(state: State, v: web.SignedIn, path: str) -> Response:
    """A file of an evaluation report under ``SIAMID_HOME/reports`` (and nowhere else)."""
    root = state.rt.settings.reports_dir.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        return Response("no such report file", 404, headers=web.SECURITY_HEADERS)
    media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    headers = {**web.SECURITY_HEADERS, "Content-Security-Policy": web.REPORT_CSP}
    return FileResponse(target, media_type=media, headers=headers)


def _system(state: ApiState) -> dict[str, Any]:
    from pipelines.services.apikeys import list_api_keys
    from storage.calibration import latest_calibration
    from storage.jobs import recent_jobs

    ident = web.served(state)
    calibration = None
    with state.rt.sessions() as s:
        if ident is not None:
            cal = latest_calibration(session=s, model_version_id=ident.model.id)
            if cal is not None:
                calibration = {
                    "id": cal.id,
                    "target_fpir": cal.target_fpir,
                    "threshold": cal.threshold,
                    "realised_fpir": cal.realised_fpir,
                    "nonmated_searches": cal.nonmated_searches,
                    "gallery_identities": cal.gallery_identities,
                    "gallery_images": cal.gallery_images,
                    "index_version_id": cal.index_version_id,
                    "created_at": cal.created_at,
                }
        jobs = [web.job_dict(j) for j in recent_jobs(session=s, limit=15)]
    return {
        "ident": ident,
        "not_ready": None if ident is not None else (state.live.last_error or "no index loaded"),
        "calibration": calibration,
        "jobs": jobs,
        "keys": list_api_keys(state.rt.sessions),
        "reports": _reports(state),
    }


@router.get("/system")
def system_page(request: Request, state: State, v: web.SignedIn) -> HTMLResponse:
    return web.render(request, "system.html.j2", v, new_key=None, **_system(state))


@router.post("/keys")
async def create_key(request: Request, state: State, v: web.SignedIn) -> HTMLResponse:
    from pipelines.services.apikeys import create_api_key

    form = await web.checked_form(request, v, write=True)
    scope = str(form.get("scope") or "")
    try:
        new = await run_in_threadpool(create_api_key, state.rt.sessions, scope)
    except user_errors() as exc:
        return web.problem(request, v, 422, message_of(exc))
    # Shown in this answer only (no web.redirect, no storage): the key exists nowhere else.
    context = await run_in_threadpool(_system, state)
    return web.render(request, "system.html.j2", v, new_key=new, **context)


@router.post("/keys/revoke")
async def revoke_key(request: Request, state: State, v: web.SignedIn) -> Response:
    from pipelines.services.apikeys import revoke_api_key

    form = await web.checked_form(request, v, write=True)
    try:
        key_id = int(str(form.get("id") or ""))
        await run_in_threadpool(revoke_api_key, state.rt.sessions, key_id)
    except ValueError:
        return web.problem(request, v, 422, "the form names no key id")
    except user_errors() as exc:
        return web.problem(request, v, 404, message_of(exc))
    return web.redirect("/ui/system")
