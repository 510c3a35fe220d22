"""The web console under ``/ui/``: server-rendered pages (Jinja2) for the people who keep the
gallery, with a little plain JavaScript (no framework, no CDN: it works offline).

:func:`install` adds it to the API's application; ``siamid api --no-ui`` (``SIAMID_API_UI=0``)
leaves it out, and then nothing answers under ``/ui``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from pipelines.api.settings import ApiSettings
from pipelines.api.ui import enrol, identify, people, signin, system
from pipelines.api.ui.session import COOKIE, COOKIE_PATH, SessionSigner, load_secret
from pipelines.api.ui.web import (
    SECURITY_HEADERS,
    Console,
    Forbidden,
    SignInRequired,
    problem,
    redirect,
    templates,
)

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI, settings: ApiSettings, home: Path) -> None:
    secret = load_secret(home, settings.ui_secret)
    app.state.console = Console(
        SessionSigner(secret, settings.ui_session_minutes * 60.0),
        templates(),
        settings.ui_secure_cookie,
    )
    for module in (signin, people, enrol, identify, system):
        app.include_router(module.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")

    async def sign_in_first(request: Request, exc: Exception) -> Response:
        """Pages send the browser to sign in (and back); images and scripts' calls get 401."""
        path = request.url.path
        page = request.method == "GET" and not (
            path.startswith("/ui/thumbs/")
            or (path.startswith("/ui/reports/") and not path.endswith(".html"))
            or path.endswith("/status")
        )
        if page:
            here = path + (f"?{request.url.query}" if request.url.query else "")
            response: Response = redirect("/ui/signin?next=" + quote(here, safe=""))
        else:
            response = PlainTextResponse("sign in first", 401, headers=SECURITY_HEADERS)
        if COOKIE in request.cookies:
            response.delete_cookie(COOKIE, path=COOKIE_PATH)
        return response

    async def forbidden(request: Request, exc: Exception) -> Response:
        return problem(request, None, 403, str(exc))

    app.add_exception_handler(SignInRequired, sign_in_first)
    app.add_exception_handler(Forbidden, forbidden)
