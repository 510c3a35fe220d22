"""The console's pages under ``/ui/``: sign in, gallery, person, enrol, identify, jobs, system.

Every page but sign-in needs a session (:mod:`pipelines.api.ui.session`); every POST carries
the session's CSRF token and, from another site's page, is refused on its Origin as well;
what changes the gallery or the keys needs a write key. Pages are rendered by Jinja2 with
autoescape on, so names and file names are always text, and answered with a
Content-Security-Policy that allows only this server's own scripts.
"""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import asdict, dataclass
from typing import Annotated, Any, cast
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import APIRouter, Depends, Query, Request
from fastapi import UploadFile as FastApiUpload
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from pipelines.api import gallery as api_gallery
from pipelines.api import probes
from pipelines.api.deps import State
from pipelines.api.errors import message_of
from pipelines.api.limits import read_upload_async
from pipelines.api.live import NotReadyError
from pipelines.api.state import ApiState
from pipelines.api.ui import enrolments, thumbs
from pipelines.api.ui import gallery as ui_gallery
from pipelines.api.ui.session import (
    COOKIE,
    COOKIE_PATH,
    CSRF_FIELD,
    CSRF_HEADER,
    SessionData,
    SessionSigner,
)
from pipelines.services.apikeys import ApiKeyInfo, allows, authenticate
from pipelines.services.errors import user_errors
from pipelines.services.identification import Identifier

logger = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
#: Reports are our own static pages (inline styles, plots as data URIs); they run no script.
REPORT_CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class SignInRequired(Exception):
    """No valid session: pages redirect to sign-in, everything else answers 401."""


@dataclass(frozen=True)
class Visitor:
    session: SessionData
    key: ApiKeyInfo
    csrf: str

    @property
    def can_write(self) -> bool:
        return allows(self.key.scope, "write")


@dataclass
class Console:
    """What the console keeps for the process: the session signer and the templates."""

    signer: SessionSigner
    templates: jinja2.Environment
    secure_cookie: bool


def person_url(name: str) -> str:
    return "/ui/person?name=" + quote(name, safe="")


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipelines.api.ui", "templates"),
        autoescape=True,  # every template, whatever its file name
        undefined=jinja2.StrictUndefined,
    )
    env.globals["person_url"] = person_url
    env.filters["dist"] = lambda v: "–" if v is None else f"{v:.3f}"
    return env


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _key_by_id(state: ApiState, key_id: int) -> ApiKeyInfo | None:
    from storage.apikeys import get_api_key

    with state.lookups() as s:
        row = get_api_key(session=s, key_id=key_id)
        return ApiKeyInfo.of(row) if row is not None else None


async def visitor(request: Request, state: State) -> Visitor:
    """The signed-in visitor: a valid, unexpired session of a key that is still active."""
    console = console_of(request)
    data = console.signer.read(request.cookies.get(COOKIE))
    if data is None:
        raise SignInRequired
    key = await run_in_threadpool(_key_by_id, state, data.key_id)
    if key is None or not key.active or key.prefix != data.prefix:
        raise SignInRequired
    return Visitor(data, key, console.signer.csrf(data))


SignedIn = Annotated[Visitor, Depends(visitor)]

router = APIRouter(prefix="/ui", include_in_schema=False)


def render(
    request: Request, template: str, v: Visitor | None, code: int = 200, **context: Any
) -> HTMLResponse:
    html = (
        console_of(request)
        .templates.get_template(template)
        .render(visitor=v, path=request.url.path, **context)
    )
    return HTMLResponse(html, code, headers={**SECURITY_HEADERS, "Content-Security-Policy": CSP})


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, 303, headers=SECURITY_HEADERS)


def problem(request: Request, v: Visitor | None, status: int, message: str) -> HTMLResponse:
    return render(request, "problem.html.j2", v, status, message=message)


def same_origin(request: Request) -> bool:
    """A browser's POST from another site names that site in Origin (or Referer)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def checked_form(request: Request, v: Visitor, *, write: bool, max_files: int = 0) -> Any:
    """The POSTed form after the CSRF, origin and scope checks; a 403 page otherwise."""
    form = await request.form(max_files=max_files, max_fields=50)
    token = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    if not same_origin(request) or not console_of(request).signer.csrf_ok(
        v.session, token if isinstance(token, str) else None
    ):
        raise Forbidden("the form has expired or did not come from this console; reload the page")
    if write and not v.can_write:
        raise Forbidden(
            f"your key {v.key.prefix} has scope {v.key.scope}; this needs a write key "
            "(`siamid apikey create --scope write`)"
        )
    return form


class Forbidden(Exception):
    pass


def upload_file(part: UploadFile) -> FastApiUpload:
    """A form part as the API's upload type (FastAPI's is Starlette's, re-exported for its
    routes' signatures; the methods the limits read with are the same)."""
    return cast(FastApiUpload, part)


def served(state: ApiState) -> Identifier | None:
    try:
        return state.live.current()
    except NotReadyError:
        return None


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console page of this server, nothing else."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/gallery"


# --- sign in / out ----------------------------------------------------------------------


@router.get("")
async def root_no_slash() -> RedirectResponse:
    return redirect("/ui/")


@router.get("/")
async def root(request: Request, state: State) -> Response:
    try:
        await visitor(request, state)
    except SignInRequired:
        return redirect("/ui/signin")
    return redirect("/ui/gallery")


@router.get("/signin")
async def signin_page(request: Request, next: str | None = None) -> HTMLResponse:
    return render(request, "signin.html.j2", None, next=safe_next(next), error=None)


@router.post("/signin")
async def signin(request: Request, state: State) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    token, target = str(form.get("key") or "").strip(), safe_next(str(form.get("next") or ""))
    if not same_origin(request):
        return render(request, "signin.html.j2", None, 403, next=target, error="wrong origin")
    key = await run_in_threadpool(authenticate, state.lookups, token) if token else None
    if key is None or not key.active:
        why = "that key was revoked" if key is not None else "unknown key"
        return render(
            request, "signin.html.j2", None, 401, next=target, error=f"{why}; check and retry"
        )
    console = console_of(request)
    cookie, _ = console.signer.issue(key.id, key.prefix)
    response = redirect(target)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(console.signer.ttl),
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=console.secure_cookie or request.url.scheme == "https",
    )
    logger.info("console sign-in with key %d (%s)", key.id, key.prefix)
    return response


@router.post("/signout")
async def signout(request: Request, v: SignedIn) -> Response:
    await checked_form(request, v, write=False)
    response = redirect("/ui/signin")
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


# --- gallery ------------------------------------------------------------------------------


@router.get("/gallery")
def gallery_page(
    request: Request,
    state: State,
    v: SignedIn,
    q: Annotated[str, Query(max_length=200)] = "",
    page: Annotated[int, Query(ge=1)] = 1,
) -> HTMLResponse:
    people = ui_gallery.people_page(state.rt, q, page)
    return render(request, "gallery.html.j2", v, people=people)


@router.get("/person")
def person_page(
    request: Request, state: State, v: SignedIn, name: Annotated[str, Query(max_length=512)]
) -> HTMLResponse:
    ident = served(state)
    try:
        person = ui_gallery.person_view(state.rt, name, ident.model if ident else None)
    except user_errors() as exc:
        return problem(request, v, 404, message_of(exc))
    return render(request, "person.html.j2", v, person=person)


@router.get("/person/remove")
def confirm_person_removal(
    request: Request, state: State, v: SignedIn, name: Annotated[str, Query(max_length=512)]
) -> HTMLResponse:
    try:
        person = ui_gallery.person_view(state.rt, name, None)
    except user_errors() as exc:
        return problem(request, v, 404, message_of(exc))
    return render(request, "confirm.html.j2", v, person=person, photo=None)


@router.post("/person/remove")
async def remove_person(request: Request, state: State, v: SignedIn) -> Response:
    form = await checked_form(request, v, write=True)
    name = str(form.get("name") or "")
    try:
        await run_in_threadpool(api_gallery.remove, state.rt, name)
    except user_errors() as exc:
        return problem(request, v, 404, message_of(exc))
    job = await run_in_threadpool(state.jobs.submit, "remove", name)
    return redirect(f"/ui/jobs/{job.id}")


@router.get("/photo/remove")
def confirm_photo_removal(
    request: Request, state: State, v: SignedIn, id: Annotated[int, Query(ge=1)]
) -> HTMLResponse:
    views = ui_gallery.photo_views(state.rt, [id], None)
    if id not in views:
        return problem(request, v, 404, f"no photo {id}; it may have been removed already")
    return render(request, "confirm.html.j2", v, person=None, photo=views[id])


@router.post("/photo/remove")
async def remove_photo(request: Request, state: State, v: SignedIn) -> Response:
    form = await checked_form(request, v, write=True)
    try:
        image_id = int(str(form.get("id") or ""))
    except ValueError:
        return problem(request, v, 422, "the form names no photo id")
    name = await run_in_threadpool(ui_gallery.remove_photo, state.rt, image_id)
    if name is None:
        return problem(request, v, 404, f"no photo {image_id}; it may have been removed already")
    job = await run_in_threadpool(state.jobs.submit, "remove", name)
    return redirect(f"/ui/jobs/{job.id}")


# --- thumbnails and reports ------------------------------------------------------------------


@router.get("/thumbs/{sha256}.jpg")
def thumbnail(
    state: State,
    v: SignedIn,
    sha256: str,
    size: Annotated[int, Query()] = 160,
    face: Annotated[bool, Query()] = False,
) -> Response:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        return Response("not a photo address", 404, headers=SECURITY_HEADERS)
    if size not in thumbs.SIZES:
        return Response(f"size must be one of {thumbs.SIZES}", 422, headers=SECURITY_HEADERS)
    source = ui_gallery.photo_file(state.rt, sha256)
    if source is None:
        return Response("no such photo", 404, headers=SECURITY_HEADERS)
    ident = served(state)
    box = (
        ui_gallery.chosen_box(state.rt, sha256)
        if face and ident is not None and ident.model.crop.detect
        else None
    )
    try:
        path = thumbs.thumbnail(state.rt, sha256, source, size, box)
    except user_errors() as exc:
        return Response(message_of(exc), 422, headers=SECURITY_HEADERS)
    headers = {**SECURITY_HEADERS, "Cache-Control": "private, max-age=86400, immutable"}
    return FileResponse(path, media_type="image/jpeg", headers=headers)


def _reports(state: ApiState) -> list[str]:
    root = state.rt.settings.reports_dir
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.html") if p.is_file())


@router.get("/reports/{path:path}")
def report_file(state: State, v: SignedIn, path: str) -> Response:
    """A file of an evaluation report under ``SIAMID_HOME/reports`` (and nowhere else)."""
    root = state.rt.settings.reports_dir.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        return Response("no such report file", 404, headers=SECURITY_HEADERS)
    media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": REPORT_CSP}
    return FileResponse(target, media_type=media, headers=headers)


# --- enrol --------------------------------------------------------------------------------


@router.get("/enrol")
def enrol_page(
    request: Request, v: SignedIn, name: Annotated[str, Query(max_length=512)] = ""
) -> HTMLResponse:
    return render(request, "enrol.html.j2", v, name=name, error=None)


@router.post("/enrol")
async def enrol(request: Request, state: State, v: SignedIn) -> Response:
    limit = state.settings.max_files
    form = await checked_form(request, v, write=True, max_files=limit + 1)
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
        return render(request, "enrol.html.j2", v, 422, name=name, error=error)
    uploads = []
    try:
        for i, f in enumerate(files):
            label = (f.filename or f"photo {i + 1}")[:200]
            data = await read_upload_async(upload_file(f), state.settings.max_upload_bytes, label)
            uploads.append(api_gallery.Upload(label, data))
        record = await run_in_threadpool(enrolments.enrol, state.rt, state.jobs, name, uploads)
    except user_errors() as exc:
        return render(request, "enrol.html.j2", v, 422, name=name, error=message_of(exc))
    except Exception as exc:  # 413 from read_upload_async
        detail = getattr(exc, "detail", None)
        if detail is None:
            raise
        return render(request, "enrol.html.j2", v, 413, name=name, error=str(detail))
    return redirect(f"/ui/enrolments/{record.id}")


def _enrolment_status(state: ApiState, record: enrolments.EnrolmentRecord) -> dict[str, Any]:
    from storage.images import find_by_sha256

    job = state.jobs.get(record.job_id) if record.job_id else None
    ident = served(state)
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
        "job": None if job is None else _job_dict(job),
        "finished": finished,
        "photos": photos,
    }


def _job_dict(job: Any) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "identity": job.identity,
        "error": job.error,
        "result": job.result,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


@router.get("/enrolments/{record_id}")
def enrolment_page(request: Request, state: State, v: SignedIn, record_id: str) -> HTMLResponse:
    record = enrolments.load(state.rt, record_id)
    if record is None:
        return problem(request, v, 404, "no such enrolment")
    return render(
        request, "enrolment.html.j2", v, record=record, status=_enrolment_status(state, record)
    )


@router.get("/enrolments/{record_id}/status")
def enrolment_status(state: State, v: SignedIn, record_id: str) -> JSONResponse:
    record = enrolments.load(state.rt, record_id)
    if record is None:
        return JSONResponse({"detail": "no such enrolment"}, 404)
    return JSONResponse(_enrolment_status(state, record), headers=SECURITY_HEADERS)


@router.get("/jobs/{job_id}")
def job_page(request: Request, state: State, v: SignedIn, job_id: str) -> HTMLResponse:
    try:
        job = state.jobs.get(job_id)
    except user_errors() as exc:
        return problem(request, v, 404, message_of(exc))
    return render(request, "job.html.j2", v, job=_job_dict(job))


@router.get("/jobs/{job_id}/status")
def job_status(state: State, v: SignedIn, job_id: str) -> JSONResponse:
    try:
        return JSONResponse(_job_dict(state.jobs.get(job_id)), headers=SECURITY_HEADERS)
    except user_errors() as exc:
        return JSONResponse({"detail": message_of(exc)}, 404)


# --- identify -----------------------------------------------------------------------------


@router.get("/identify")
def identify_page(request: Request, state: State, v: SignedIn) -> HTMLResponse:
    ident = served(state)
    return render(request, "identify.html.j2", v, ready=ident is not None)


@router.post("/identify")
async def identify(request: Request, state: State, v: SignedIn) -> JSONResponse:
    """Every face of the photo with its decision and candidates (JSON for the page's script)."""
    try:
        form = await checked_form(request, v, write=False, max_files=1)
    except Forbidden as exc:
        return JSONResponse({"detail": str(exc)}, 403)
    image = form.get("image")
    if not isinstance(image, UploadFile):
        return JSONResponse({"detail": "send the photo in the field 'image'"}, 422)
    ident = served(state)
    if ident is None:
        return JSONResponse(
            {"detail": "no index is loaded yet; publish one with siamid embed"}, 503
        )
    label = (image.filename or "photo")[:200]
    try:
        data = await read_upload_async(upload_file(image), state.settings.max_upload_bytes, label)
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
                        "href": person_url(c.identity),
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
        headers=SECURITY_HEADERS,
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


# --- system -------------------------------------------------------------------------------


def _system(state: ApiState) -> dict[str, Any]:
    from pipelines.services.apikeys import list_api_keys
    from storage.calibration import latest_calibration
    from storage.jobs import recent_jobs

    ident = served(state)
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
        jobs = [_job_dict(j) for j in recent_jobs(session=s, limit=15)]
    return {
        "ident": ident,
        "not_ready": None if ident is not None else (state.live.last_error or "no index loaded"),
        "calibration": calibration,
        "jobs": jobs,
        "keys": list_api_keys(state.rt.sessions),
        "reports": _reports(state),
    }


@router.get("/system")
def system_page(request: Request, state: State, v: SignedIn) -> HTMLResponse:
    return render(request, "system.html.j2", v, new_key=None, **_system(state))


@router.post("/keys")
async def create_key(request: Request, state: State, v: SignedIn) -> HTMLResponse:
    from pipelines.services.apikeys import create_api_key

    form = await checked_form(request, v, write=True)
    scope = str(form.get("scope") or "")
    try:
        new = await run_in_threadpool(create_api_key, state.rt.sessions, scope)
    except user_errors() as exc:
        return problem(request, v, 422, message_of(exc))
    # Shown in this answer only (no redirect, no storage): the key exists nowhere else.
    context = await run_in_threadpool(_system, state)
    return render(request, "system.html.j2", v, new_key=new, **context)


@router.post("/keys/revoke")
async def revoke_key(request: Request, state: State, v: SignedIn) -> Response:
    from pipelines.services.apikeys import revoke_api_key

    form = await checked_form(request, v, write=True)
    try:
        key_id = int(str(form.get("id") or ""))
        await run_in_threadpool(revoke_api_key, state.rt.sessions, key_id)
    except ValueError:
        return problem(request, v, 422, "the form names no key id")
    except user_errors() as exc:
        return problem(request, v, 404, message_of(exc))
    return redirect("/ui/system")
