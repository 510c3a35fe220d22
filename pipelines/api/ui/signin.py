"""Signing in to the console with an API key, and out."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pipelines.api.deps import State
from pipelines.api.ui import web
from pipelines.api.ui.session import (
    COOKIE,
    COOKIE_PATH,
)
from pipelines.services.apikeys import authenticate

logger = logging.getLogger(__name__)
router = web.page_router()


@router.get("")
async def root_no_slash() -> RedirectResponse:
    return web.redirect("/ui/")


@router.get("/")
async def root(request: Request, state: State) -> Response:
    try:
        await web.visitor(request, state)
    except web.SignInRequired:
        return web.redirect("/ui/signin")
    return web.redirect("/ui/gallery")


@router.get("/signin")
async def signin_page(request: Request, next: str | None = None) -> HTMLResponse:
    return web.render(request, "signin.html.j2", None, next=web.safe_next(next), error=None)


@router.post("/signin")
async def signin(request: Request, state: State) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    token, target = str(form.get("key") or "").strip(), web.safe_next(str(form.get("next") or ""))
    if not web.same_origin(request):
        return web.render(request, "signin.html.j2", None, 403, next=target, error="wrong origin")
    key = await run_in_threadpool(authenticate, state.lookups, token) if token else None
    if key is None or not key.active:
        why = "that key was revoked" if key is not None else "unknown key"
        return web.render(
            request, "signin.html.j2", None, 401, next=target, error=f"{why}; check and retry"
        )
    console = web.console_of(request)
    cookie, _ = console.signer.issue(key.id, key.prefix)
    response = web.redirect(target)
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
async def signout(request: Request, v: web.SignedIn) -> Response:
    await web.checked_form(request, v, write=False)
    response = web.redirect("/ui/signin")
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response
