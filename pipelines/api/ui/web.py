"""What every console page shares: the session check, CSRF and origin checks, rendering.

Every page but sign-in needs a session (:mod:`pipelines.api.ui.session`); every POST carries
the session's CSRF token and, from another site's page, is refused on its Origin as well;
what changes the gallery or the keys needs a write key. Pages are rendered by Jinja2 with
autoescape on, so names and file names are always text, and answered with a
Content-Security-Policy that allows only this server's own scripts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any, cast
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi import UploadFile as FastApiUpload
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import UploadFile

from pipelines.api.deps import State
from pipelines.api.jobs import JobView
from pipelines.api.live import NotReadyError
from pipelines.api.state import ApiState
from pipelines.api.ui.session import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    SessionData,
    SessionSigner,
)
from pipelines.services.apikeys import ApiKeyInfo, allows
from pipelines.services.identification import Identifier
from storage.models import ApiJob

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


class Forbidden(Exception):
    """A POST without this session's CSRF token, from another origin, or needing a write key:
    answered 403 with a page that says which."""


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


def page_router() -> APIRouter:
    """The router of a module of console pages: under ``/ui``, left out of the OpenAPI schema."""
    return APIRouter(prefix="/ui", include_in_schema=False)


def person_url(name: str) -> str:
    return "/ui/person?name=" + quote(name, safe="")


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipelines.api.ui", "templates"),
        autoescape=True,  # every template, whatever its file name
        undefined=jinja2.StrictUndefined,
    )
    env.globals["person_url"] = person_url
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


def job_dict(job: JobView | ApiJob) -> dict[str, Any]:
    """A job (the runner's view or its row) as plain data for a page or its script."""
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
