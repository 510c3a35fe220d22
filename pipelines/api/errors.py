"""Errors as HTTP answers: what a client can cause is 4xx with ``{"detail": reason}``.

The one list of user errors (:func:`pipelines.services.errors.user_errors`) is mapped here to status
codes. Known faults of what the service stands on are not bugs either: a database that is down,
restarting or locked is 503 with ``Retry-After`` and a one-line reason
(:func:`pipelines.services.errors.database_unavailable`), a full disk is 507
(:func:`pipelines.services.errors.out_of_space`). What is left is a bug: 500 with a generic
reason, the traceback logged once.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from index.errors import DimensionMismatchError, InvalidInputError, VectorIndexError
from pipelines.api.jobs import UnknownJobError
from pipelines.api.live import NotReadyError
from pipelines.services.errors import (
    DatabaseError,
    GalleryError,
    database_unavailable,
    out_of_space,
    user_errors,
)
from siamese.images import ImageRejected
from storage.identities import UnknownIdentityError
from storage.indexes import NoPublishedIndexError
from storage.registry import UnknownModelVersionError

logger = logging.getLogger(__name__)

#: First match wins; other user errors are 400. "Not ready" is the server's state, not the
#: client's doing: 503, which tells a client (and a load balancer) to come back.
STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (UnknownIdentityError, 404),
    (UnknownModelVersionError, 404),
    (UnknownJobError, 404),
    (ImageRejected, 422),
    (DimensionMismatchError, 422),  # an embedding that is not of the model's size
    (InvalidInputError, 422),
    (GalleryError, 422),
    (NotReadyError, 503),
    (DatabaseError, 503),  # the database cannot be opened now (server down, unreachable)
    (NoPublishedIndexError, 503),
    (VectorIndexError, 503),  # the index file itself is damaged or missing: an operator's job
)


def status_of(exc: BaseException) -> int:
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 400)


def message_of(exc: BaseException) -> str:
    """The error's own sentence (``str`` of a LookupError would add quotes around it)."""
    if isinstance(exc, LookupError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def install(app: FastAPI, on_rejected_image: Any = None) -> None:
    async def user_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, ImageRejected) and on_rejected_image is not None:
            on_rejected_image(exc.reason)
        headers = {"Retry-After": "1"} if status_of(exc) == 503 else None
        return JSONResponse({"detail": message_of(exc)}, status_of(exc), headers=headers)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in errors
        )
        return JSONResponse({"detail": reasons or "invalid request", "errors": _plain(errors)}, 422)

    async def fault(request: Request, exc: Exception) -> JSONResponse:
        """The database or the disk, not the request and not a bug: 503 / 507, or a 500."""
        if (reason := out_of_space(exc)) is not None:
            logger.error("%s %s: %s", request.method, request.url.path, reason)
            return JSONResponse({"detail": f"{reason}; an operator must free space"}, 507)
        if (reason := database_unavailable(exc)) is not None:
            logger.warning("%s %s: 503, %s", request.method, request.url.path, reason)
            return JSONResponse(
                {"detail": f"{reason}; try again shortly"},
                503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        return internal_error(request, exc)

    for cls in (*user_errors(), NotReadyError):
        app.add_exception_handler(cls, user_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    for cls in (DBAPIError, DisconnectionError, PoolTimeoutError, OSError):
        app.add_exception_handler(cls, fault)


#: Seconds a client is told to wait when the database does not answer (a restart takes a few).
RETRY_AFTER_S = 2


def internal_error(request: Request, exc: BaseException) -> JSONResponse:
    """A bug: the traceback logged once, with the request's method and path."""
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error; the server log has the details"}, 500)


class BugMiddleware:
    """Answers 500 for what no handler took, and logs its traceback once.

    Starlette's own last resort (a handler for ``Exception``) re-raises after answering, so
    uvicorn logs the same traceback a second time; this one does not. A response that already
    started cannot be replaced: then the error goes on to the server, as before.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            if started:
                raise
            await internal_error(Request(scope), exc)(scope, receive, send)


def _plain(errors: Any) -> list[dict[str, Any]]:
    """Validation errors without the raw input (an uploaded file or a long vector)."""
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors
    ]
