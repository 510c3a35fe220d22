"""The gallery: people by name, a person's photos, removals, thumbnails."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, Response

from pipelines.api.deps import State
from pipelines.api.errors import message_of
from pipelines.api.ui import gallery as ui_gallery
from pipelines.api.ui import thumbs, web
from pipelines.services.errors import user_errors

router = web.page_router()


@router.get("/gallery")
def gallery_page(
    request: Request,
    state: State,
    v: web.SignedIn,
    q: Annotated[str, Query(max_length=200)] = "",
    page: Annotated[int, Query(ge=1)] = 1,
) -> HTMLResponse:
    people = ui_gallery.people_page(state.rt, q, page)
    return web.render(request, "gallery.html.j2", v, people=people)


@router.get("/person")
def person_page(
    request: Request, state: State, v: web.SignedIn, name: Annotated[str, Query(max_length=512)]
) -> HTMLResponse:
    ident = web.served(state)
    try:
        person = ui_gallery.person_view(state.rt, name, ident.model if ident else None)
    except user_errors() as exc:
        return web.problem(request, v, 404, message_of(exc))
    return web.render(request, "person.html.j2", v, person=person)


@router.get("/person/remove")
def confirm_person_removal(
    request: Request, state: State, v: web.SignedIn, name: Annotated[str, Query(max_length=512)]
) -> HTMLResponse:
    try:
        person = ui_gallery.person_view(state.rt, name, None)
    except user_errors() as exc:
        return web.problem(request, v, 404, message_of(exc))
    return web.render(request, "confirm.html.j2", v, person=person, photo=None)


@router.post("/person/remove")
async def remove_person(request: Request, state: State, v: web.SignedIn) -> Response:
    form = await web.checked_form(request, v, write=True)
    name = str(form.get("name") or "")
    try:
        await run_in_threadpool(ui_gallery.remove_person, state.rt, name)
    except user_errors() as exc:
        return web.problem(request, v, 404, message_of(exc))
    job = await run_in_threadpool(state.jobs.submit, "remove", name)
    return web.redirect(f"/ui/jobs/{job.id}")


@router.get("/photo/remove")
def confirm_photo_removal(
    request: Request, state: State, v: web.SignedIn, id: Annotated[int, Query(ge=1)]
) -> HTMLResponse:
    views = ui_gallery.photo_views(state.rt, [id], None)
    if id not in views:
        return web.problem(request, v, 404, f"no photo {id}; it may have been removed already")
    return web.render(request, "confirm.html.j2", v, person=None, photo=views[id])


@router.post("/photo/remove")
async def remove_photo(request: Request, state: State, v: web.SignedIn) -> Response:
    form = await web.checked_form(request, v, write=True)
    try:
        image_id = int(str(form.get("id") or ""))
    except ValueError:
        return web.problem(request, v, 422, "the form names no photo id")
    name = await run_in_threadpool(ui_gallery.remove_photo, state.rt, image_id)
    if name is None:
        return web.problem(
            request, v, 404, f"no photo {image_id}; it may have been removed already"
        )
    job = await run_in_threadpool(state.jobs.submit, "remove", name)
    return web.redirect(f"/ui/jobs/{job.id}")


# --- thumbnails and reports ------------------------------------------------------------------


@router.get("/thumbs/{sha256}.jpg")
def thumbnail(
    state: State,
    v: web.SignedIn,
    sha256: str,
    size: Annotated[int, Query()] = 160,
    face: Annotated[bool, Query()] = False,
) -> Response:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        return Response("not a photo address", 404, headers=web.SECURITY_HEADERS)
    if size not in thumbs.SIZES:
        return Response(f"size must be one of {thumbs.SIZES}", 422, headers=web.SECURITY_HEADERS)
    source = ui_gallery.photo_file(state.rt, sha256)
    if source is None:
        return Response("no such photo", 404, headers=web.SECURITY_HEADERS)
    ident = web.served(state)
    box = (
        ui_gallery.chosen_box(state.rt, sha256)
        if face and ident is not None and ident.model.crop.detect
        else None
    )
    try:
        path = thumbs.thumbnail(state.rt, sha256, source, size, box)
    except user_errors() as exc:
        return Response(message_of(exc), 422, headers=web.SECURITY_HEADERS)
    headers = {**web.SECURITY_HEADERS, "Cache-Control": "private, max-age=86400, immutable"}
    return FileResponse(path, media_type="image/jpeg", headers=headers)
