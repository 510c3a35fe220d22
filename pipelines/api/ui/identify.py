"""Identifying the faces of a dropped photo (JSON for the page's script)."""

from __future__ import annotations

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import UploadFile

from pipelines.api import probes
from pipelines.api.deps import State
from pipelines.api.errors import message_of
from pipelines.api.limits import read_upload_async
from pipelines.api.state import ApiState
from pipelines.api.ui import web
from pipelines.services.errors import user_errors

router = web.page_router()


@router.get("/identify")
def identify_page(request: Request, state: State, v: web.SignedIn) -> HTMLResponse:
    ident = web.served(state)
    return web.render(request, "identify.html.j2", v, ready=ident is not None)


@router.post("/identify")
async def identify(request: Request, state: State, v: web.SignedIn) -> JSONResponse:
    """Every face of the photo with its decision and candidates (JSON for the page's script)."""
    try:
        form = await web.checked_form(request, v, write=False, max_files=1)
    except web.Forbidden as exc:
        return JSONResponse({"detail": str(exc)}, 403)
    image = form.get("image")
    if not isinstance(image, UploadFile):
        return JSONResponse({"detail": "send the photo in the field 'image'"}, 422)
    ident = web.served(state)
    if ident is None:
        return JSONResponse(
            {"detail": "no index is loaded yet; publish one with siamid embed"}, 503
        )
    label = (image.filename or "photo")[:200]
    try:
        data = await read_upload_async(
            web.upload_file(image), state.settings.max_upload_bytes, label
        )
        decisions = await state.compute(
            probes.identify_photo, ident, data, limits=state.rt.limits, label=label
        )
    except user_errors() as exc:
        return JSONResponse({"detail": message_of(exc)}, 422)
    nearest = await run_in_threadpool(
        _nearest_photos, state, [c.face_image_id for d in decisions for c in d.candidates]
    )
    faces = []
    for d in decisions:
        faces.append(
            {
                "decision": d.decision,
                "identity": d.identity,
                "distance": d.distance,
                "threshold": d.threshold,
                "threshold_source": d.threshold_source,
                "box": d.box,
                "error": d.error,
                "candidates": [
                    {
                        "identity": c.identity,
                        "distance": c.distance,
                        "href": web.person_url(c.identity),
                        "thumb": f"/ui/thumbs/{nearest[c.face_image_id]}.jpg?size=96"
                        if c.face_image_id in nearest
                        else None,
                    }
                    for c in d.candidates
                ],
            }
        )
    return JSONResponse(
        {"model": ident.model.name, "index_version": ident.index_version_id, "faces": faces},
        headers=web.SECURITY_HEADERS,
    )


def _nearest_photos(state: ApiState, image_ids: list[int]) -> dict[int, str]:
    from storage.images import get_image

    out = {}
    with state.rt.sessions() as s:
        for i in set(image_ids):
            row = get_image(session=s, image_id=i)
            if row is not None and row.sha256:
                out[i] = row.sha256
    return out
